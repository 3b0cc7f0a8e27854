import numpy as np
import pytest
import torch

import tapkit
from tapkit.inputs.labels import PADDING
from tapkit.models.tap.prompt_encoder import PromptEncoder
from tapkit.models.tap.protocol import PAD_VALUE_BGR, preprocess, resize_scale
from tapkit.models.tap.protocol import select_masks
from tapkit.inputs.prompts import Prompt, PromptError, encode_prompt, mask_to_points, sketch_to_points


def test_points_only_prompt_gets_one_padding_point_and_box_comes_first():
    pts = encode_prompt(Prompt(points=[(3, 4, 1), (5, 6, 0)]), 10, 10)
    assert pts.tolist() == [[3, 4, 1], [5, 6, 0], [0, 0, PADDING]]
    pts = encode_prompt(Prompt(points=[(3, 4, 1)], box=(1, 2, 8, 9)), 10, 10)
    assert pts.tolist() == [[1, 2, 2], [8, 9, 3], [3, 4, 1]]


@pytest.mark.parametrize(
    "prompt",
    [
        Prompt(),
        Prompt(points=[(11, 4, 1)]),
        Prompt(points=[(3, -1, 1)]),
        Prompt(points=[(3, 4, 2)]),
        Prompt(points=[(3,)]),
        Prompt(box=(5, 5, 1, 1)),
        Prompt(box=(1, 2, 3)),
        Prompt(points=[(float("nan"), 1, 1)]),
    ],
)
def test_malformed_or_outside_prompts_are_refused(prompt):
    with pytest.raises(PromptError):
        encode_prompt(prompt, 10, 10)


def test_padding_point_ignores_its_position():
    enc = PromptEncoder(16, 64)
    xy = torch.tensor([[[0.0, 0.0]], [[40.0, 7.0]]])
    labels = torch.full((2, 1), PADDING)
    out = enc(xy, labels)
    assert torch.equal(out[0], out[1])
    assert torch.equal(out[0, 0], enc.point_embed.weight[PADDING])


def test_coordinates_are_normalized_at_pixel_centres():
    enc = PromptEncoder(16, 64)
    xy = torch.tensor([[[0.0, 63.0]]])
    labels = torch.ones(1, 1, dtype=torch.long)
    coords = torch.tensor([[[0.5 / 64, 63.5 / 64]]])
    expected = enc.encode_coords(coords) + enc.point_embed.weight[1]
    torch.testing.assert_close(enc(xy, labels), expected)
    grid = enc.dense_positions(2, 3)
    torch.testing.assert_close(grid[4], enc.encode_coords(torch.tensor([1.5 / 3, 1.5 / 2])))


def test_sketch_mask_becomes_nine_points_spaced_over_its_pixels():
    mask = np.zeros((20, 30), bool)
    mask[5:8, 2:12] = True  # 30 pixels, row-major
    pts = mask_to_points(mask)
    ys, xs = np.nonzero(mask)
    keep = [3, 6, 9, 12, 15, 18, 21, 24, 27]  # linspace(0, 30, 11)[1:-1]
    assert pts.tolist() == [[xs[k], ys[k]] for k in keep]
    polyline = sketch_to_points([(2, 2), (20, 2)])
    assert polyline.shape == (9, 2)
    assert set(polyline[:, 1].tolist()) == {2.0}
    assert polyline[:, 0].min() >= 2 and polyline[:, 0].max() <= 20


@pytest.mark.parametrize("h,w", [(100, 150), (150, 100), (128, 128), (37, 300), (300, 37), (1, 5)])
def test_preprocess_resizes_longest_side_and_pads_with_truncated_mean(h, w):
    rgb = np.full((h, w, 3), (10, 20, 30), np.uint8)
    padded, info = preprocess(rgb, 64)
    assert padded.shape == (64, 64, 3)
    assert max(info.resized_size) == 64
    rh, rw = info.resized_size
    assert abs(rh - h * 64 / max(h, w)) <= 0.5 and abs(rw - w * 64 / max(h, w)) <= 0.5
    assert padded[:rh, :rw].reshape(-1, 3)[0].tolist() == [30, 20, 10]  # BGR
    assert PAD_VALUE_BGR.tolist() == [103, 116, 123]
    if rh < 64:
        assert padded[rh:, :].reshape(-1, 3)[0].tolist() == [103, 116, 123]
    assert resize_scale(h, w, 64) == pytest.approx(64 / max(h, w))


def test_routing_box_takes_mask_zero_points_best_of_the_rest():
    iou = torch.tensor([[0.9, 0.1, 0.5, 0.2], [0.9, 0.1, 0.5, 0.2], [0.1, 0.2, 0.3, 0.8]])
    is_box = torch.tensor([True, False, True])
    assert select_masks(iou, is_box).tolist() == [0, 2, 0]


def test_mixed_length_batch_equals_each_prompt_alone(tiny_model, rgb_image):
    predictor = tapkit.Predictor(tiny_model, max_batch=2)
    predictor.set_image(rgb_image)
    prompts = [
        Prompt(points=[(40, 30, 1)]),
        Prompt(box=(10, 10, 100, 70)),
        Prompt(points=[(40, 30, 1), (100, 80, 0)]),
        Prompt(points=[(60, 50, 1)]),
        Prompt(box=(10, 10, 100, 70), points=[(50, 40, 1)]),
        Prompt(points=[(5, 5, 1)]),
    ]
    together = predictor.predict(prompts)
    for prompt, region in zip(prompts, together):
        alone = predictor.predict([prompt])[0]
        assert np.array_equal(alone.mask, region.mask)
        assert alone.mask_index == region.mask_index
        assert alone.score == pytest.approx(region.score, abs=1e-5)
        assert alone.caption == region.caption
        assert alone.concept == region.concept
    assert [r.mask_index == 0 for r in together] == [False, True, False, False, True, False]


def test_masks_are_the_selected_logits_upscaled_twice(tiny_model, rgb_image):
    predictor = tapkit.Predictor(tiny_model)
    emb = predictor.set_image(rgb_image)
    region = predictor.predict([Prompt(points=[(40, 30, 1)])], captions=False)[0]
    points = encode_prompt(Prompt(points=[(40, 30, 1)]), 144, 96)[None]
    decoded = predictor.decode_points(points)
    # independent reference: numpy bilinear (half-pixel centres) in two steps
    logits = decoded.mask_logits[0].numpy().astype(np.float64)
    size = tiny_model.image_size
    rh, rw = emb.info.resized_size
    big = _bilinear(logits, size, size)[:rh, :rw]
    final = _bilinear(big, 96, 144) > 0
    assert region.mask.shape == (96, 144)
    assert (region.mask != final).sum() <= 2  # float rounding at the 0 level set only
    assert region.area == int(region.mask.sum())
    ys, xs = np.nonzero(region.mask)
    if xs.size:
        assert region.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def _bilinear(a, out_h, out_w):
    in_h, in_w = a.shape
    def coords(n_out, n_in):
        c = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        c = np.clip(c, 0, n_in - 1)
        lo = np.floor(c).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, c - lo
    y0, y1, fy = coords(out_h, in_h)
    x0, x1, fx = coords(out_w, in_w)
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bot = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return top * (1 - fy[:, None]) + bot * fy[:, None]


def test_region_carries_concepts_caption_and_embedding(tiny_model, rgb_image):
    predictor = tapkit.Predictor(tiny_model)
    predictor.set_image(rgb_image)
    region = predictor.predict([Prompt(points=[(40, 30, 1)])], top_k=3)[0]
    assert len(region.concepts) == 3
    probs = [p for _, p in region.concepts]
    assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
    assert region.concept == region.concepts[0][0] and region.concept_score == probs[0]
    assert isinstance(region.caption, str)
    assert region.embedding.shape == (tiny_model.cfg.image_decoder.sem_embed_dim,)
    js = region.to_json()
    assert js["prompt"] == {"points": [[40.0, 30.0, 1]]}
    assert js["mask"]["size"] == [96, 144]


def test_set_image_from_path_equals_array(tiny_model, rgb_image, tmp_path):
    from PIL import Image

    path = tmp_path / "img.png"
    Image.fromarray(rgb_image).save(path)
    predictor = tapkit.Predictor(tiny_model)
    a = predictor.embed_image(rgb_image).embedding
    b = predictor.embed_image(path).embedding
    assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_pipeline_runs(tiny_files, rgb_image, dtype):
    model = tapkit.load_model(tiny_files.checkpoint, tokenizer=tiny_files.tokenizer, concepts=tiny_files.concepts, device="cpu", dtype=dtype)
    predictor = tapkit.Predictor(model)
    predictor.set_image(rgb_image)
    regions = predictor.predict([Prompt(points=[(40, 30, 1)]), Prompt(box=(10, 10, 100, 70))])
    assert all(r.mask.dtype == bool and r.mask.shape == (96, 144) for r in regions)
    assert all(isinstance(r.caption, str) and isinstance(r.score, float) for r in regions)


def test_sixteen_bit_grey_png_keeps_its_high_byte_as_opencv_does(tmp_path):
    from PIL import Image

    from tapkit.inputs.image import read_image

    values = np.array([[0, 255, 256, 40000], [65535, 1000, 30000, 512]], np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    rgb = read_image(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 4, 3)
    assert rgb[:, :, 0].tolist() == (values >> 8).tolist()
    assert np.array_equal(rgb[:, :, 0], rgb[:, :, 2])
