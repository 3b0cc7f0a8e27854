import json

import numpy as np
import pytest
import torch

import tapkit
from tapkit.errors import UserError
from tapkit.everything import EverythingConfig, EverythingGenerator, tokenize_everything
from tapkit.models.tap.image_decoder import DecoderOutput
from tapkit.predictor.results import mask_bbox
from tapkit.utils.rle import decode_rle

# The tiny model reads 128 x 128 inputs and predicts 32 x 32 low-resolution masks, so on a
# 128 x 128 image one low-resolution cell is a 4 x 4 pixel block. A +-10 logit rectangle
# of cells upscales (bilinear) to that rectangle of pixels less its 4 corner pixels.
# Stability is scored on the upscaled logits (as SAM does): at +-100 no upscaled pixel
# falls inside the +-1 band, so these rectangles are perfectly stable at full size too.
CELL = 4


def rect(x0, y0, x1, y1, value=100.0):
    logits = torch.full((32, 32), -100.0)
    logits[y0:y1, x0:x1] = value
    return logits


def pixels(x0, y0, x1, y1):
    mask = np.zeros((128, 128), dtype=bool)
    mask[y0 * CELL : y1 * CELL, x0 * CELL : x1 * CELL] = True
    for y in (y0 * CELL, y1 * CELL - 1):
        for x in (x0 * CELL, x1 * CELL - 1):
            mask[y, x] = False
    return mask


EMPTY = torch.full((32, 32), -10.0)
SOFT = rect(12, 2, 20, 10, value=0.5) * 0 + torch.where(rect(12, 2, 20, 10) > 0, 0.5, -0.5)
A, A_SHIFTED, B, C = rect(2, 2, 10, 10), rect(2, 2, 10, 11), rect(20, 2, 30, 12), rect(20, 16, 30, 30)
D_WITH_ISLAND = torch.maximum(rect(2, 20, 6, 24), rect(10, 28, 11, 29))
E_TINY = rect(14, 20, 15, 21)
EVERYTHING = torch.full((32, 32), 10.0)

# Per grid point (2 x 2 grid): masks 0-3 and their predicted IoU. Mask 0 (the box-prompt
# mask) looks best everywhere but point prompts must never use it.
HAND_MADE = [
    ([EVERYTHING, A, A_SHIFTED, SOFT], [0.999, 0.95, 0.92, 0.99]),
    ([EVERYTHING, B, C, EMPTY], [0.999, 0.80, 0.93, 0.97]),
    ([EVERYTHING, D_WITH_ISLAND, E_TINY, EMPTY], [0.999, 0.90, 0.91, 0.50]),
    ([EVERYTHING, EMPTY, EMPTY, EMPTY], [0.999, 0.50, 0.50, 0.50]),
]


def hand_made_decode(model):
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(4, 4, model.cfg.image_decoder.embed_dim, generator=gen)
    embeds = torch.randn(4, 4, model.cfg.image_decoder.sem_embed_dim, generator=gen)

    def decode(image_embed, xy, labels):
        assert xy.shape == (4, 2, 2) and labels[:, 0].eq(1).all() and labels[:, 1].eq(4).all()
        logits = torch.stack([torch.stack(masks) for masks, _ in HAND_MADE])
        iou = torch.tensor([ious for _, ious in HAND_MADE])
        return DecoderOutput(logits, iou, tokens, embeds)

    return decode, tokens


@pytest.fixture
def hand_made(tiny_model, monkeypatch):
    """The tiny model with its mask decoder replaced by the hand-made masks above, and a
    record of how many regions each caption call decoded."""
    decode, tokens = hand_made_decode(tiny_model)
    monkeypatch.setattr(tiny_model, "decode", decode)
    calls = []
    real_generate = tiny_model.text_decoder.generate

    def generate(prompts, *args, **kwargs):
        calls.append(prompts.detach().clone())
        return real_generate(prompts, *args, **kwargs)

    monkeypatch.setattr(tiny_model.text_decoder, "generate", generate)
    return tiny_model, tokens, calls


pytestmark = pytest.mark.usefixtures("one_torch_thread")


IMAGE = np.full((128, 128, 3), 100, dtype=np.uint8)
SETTINGS = dict(points_per_side=2, pred_iou_thresh=0.88, stability_thresh=0.95, box_nms_thresh=0.7)


def test_filters_keep_exactly_the_good_masks(hand_made):
    model, tokens, calls = hand_made
    result = EverythingGenerator(model, EverythingConfig(**SETTINGS)).generate(IMAGE)
    # A wins over its shifted copy (NMS); SOFT is unstable, B scores too low, EMPTY is empty.
    assert [r.score for r in result.regions] == pytest.approx([0.95, 0.93, 0.91, 0.90])
    assert [r.mask_index for r in result.regions] == [1, 2, 2, 1]
    expected = [pixels(2, 2, 10, 10), pixels(20, 16, 30, 30), pixels(14, 20, 15, 21), pixels(2, 20, 6, 24) | pixels(10, 28, 11, 29)]
    for region, mask in zip(result.regions, expected):
        assert np.array_equal(region.mask, mask)
        assert region.bbox == mask_bbox(mask) and region.area == mask.sum()
        assert region.stability == 1.0 and region.crop_box == (0, 0, 128, 128)
    assert result.regions[0].point == (32.0, 32.0) and result.regions[1].point == (96.0, 32.0)
    c = result.counts
    assert (c.points, c.candidates, c.passed_iou, c.passed_stability, c.after_nms, c.kept) == (4, 12, 7, 5, 4, 4)
    # captions only for the kept regions, all in one batch, from their own semantic tokens
    assert len(calls) == 1 and calls[0].shape[0] == 4
    kept_tokens = torch.stack([tokens[0, 1], tokens[1, 2], tokens[2, 2], tokens[2, 1]]).to(calls[0].dtype)
    torch.testing.assert_close(calls[0][:, 0], kept_tokens)
    assert all(isinstance(r.caption, str) for r in result.regions)


def test_stability_is_scored_on_the_upscaled_logits(hand_made, monkeypatch):
    """A one-cell blob of +-10 logits is perfectly stable at low resolution, but upscaled
    4x (bilinear, half-pixel centres) its 4 x 4 pixels get cell weights 0.625 / 0.875 per
    axis: 4 pixels at 20 * 0.875^2 - 10 = 5.3 (above +1), 8 at 20 * 0.547 - 10 = 0.94
    (inside the band), 4 corners at -2.2. SAM's score is then 4 / 12."""
    model, tokens, _ = hand_made
    soft_blob = torch.full((32, 32), -10.0)
    soft_blob[20, 14] = 10.0
    logits = torch.stack([torch.stack([EVERYTHING, soft_blob, EMPTY, EMPTY])] * 4)
    iou = torch.tensor([[0.1, 0.95, 0.1, 0.1]] * 4)
    monkeypatch.setattr(model, "decode", lambda image_embed, xy, labels: DecoderOutput(logits, iou, tokens, tokens[..., :0]))
    loose = dict(SETTINGS, stability_thresh=0.0, box_nms_thresh=1.0, captions=False, top_k=0)
    result = EverythingGenerator(model, EverythingConfig(**loose)).generate(IMAGE)
    assert len(result.regions) == 4
    assert all(r.stability == pytest.approx(4 / 12) and r.area == 12 for r in result.regions)
    strict = EverythingGenerator(model, EverythingConfig(**dict(loose, stability_thresh=0.95))).generate(IMAGE)
    assert strict.regions == [] and strict.counts.passed_iou == 4 and strict.counts.passed_stability == 0


def test_small_regions_and_max_regions(hand_made):
    model, _, calls = hand_made
    result = EverythingGenerator(model, EverythingConfig(**SETTINGS, min_region_area=20)).generate(IMAGE)
    # E (12 pixels) is dropped; D loses its 12-pixel island
    assert [r.score for r in result.regions] == pytest.approx([0.95, 0.93, 0.90])
    assert np.array_equal(result.regions[2].mask, pixels(2, 20, 6, 24))
    assert all(r.area >= 20 for r in result.regions)
    capped = EverythingGenerator(model, EverythingConfig(**SETTINGS, max_regions=2)).generate(IMAGE)
    # the first run captioned its 3 regions, the capped one only 2
    assert [r.score for r in capped.regions] == pytest.approx([0.95, 0.93])
    assert [c.shape[0] for c in calls] == [3, 2]


def test_mask_nms_after_box_nms(hand_made):
    model, _, _ = hand_made
    no_box_nms = dict(SETTINGS, box_nms_thresh=1.0, captions=False)
    both = EverythingGenerator(model, EverythingConfig(**no_box_nms)).generate(IMAGE)
    assert 0.92 in [pytest.approx(r.score) for r in both.regions]  # A_SHIFTED, mask IoU 0.89 with A
    result = EverythingGenerator(model, EverythingConfig(**no_box_nms, mask_nms_thresh=0.8)).generate(IMAGE)
    assert [r.score for r in result.regions] == pytest.approx([r.score for r in both.regions if r.score != pytest.approx(0.92)])
    with pytest.raises(UserError):
        EverythingConfig(mask_nms_thresh=1.5)


def test_best_mask_per_point_follows_tap_routing(hand_made):
    model, _, _ = hand_made
    loose = dict(SETTINGS, pred_iou_thresh=0.0, stability_thresh=0.0)
    result = EverythingGenerator(model, EverythingConfig(**loose, masks_per_point="best", captions=False)).generate(IMAGE)
    # best of masks 1-3: SOFT (point 0, 0.99) and E (point 2, 0.91); point 1 picks EMPTY,
    # point 3 picks an EMPTY mask (ties -> mask 1): empty masks never survive
    assert [(r.mask_index, r.score) for r in result.regions] == [(3, pytest.approx(0.99)), (2, pytest.approx(0.91))]
    assert result.counts.candidates == 4


def test_no_captions_and_no_concepts(hand_made):
    model, _, calls = hand_made
    result = EverythingGenerator(model, EverythingConfig(**SETTINGS, captions=False, top_k=0)).generate(IMAGE)
    assert not calls
    assert all(r.caption is None and r.concept is None and r.concepts == [] for r in result.regions)


def test_random_model_output_structure(tiny_model, rgb_image):
    result = tokenize_everything(tiny_model, rgb_image, points_per_side=4, pred_iou_thresh=-100.0, stability_thresh=0.0, top_k=3, max_regions=3)
    h, w = rgb_image.shape[:2]
    assert (result.height, result.width) == (h, w) and result.regions
    assert result.counts.points == 16 and result.counts.candidates == 48 and len(result.regions) <= 3
    data = json.loads(json.dumps(result.to_json("x.png")))
    assert data["image"] == {"path": "x.png", "height": h, "width": w}
    assert data["settings"]["points_per_side"] == 4
    assert set(data["timings"]) == {"encode", "decode", "filter", "postprocess", "concepts", "captions", "total"}
    names = set(tiny_model.concepts.names)
    for i, (region, item) in enumerate(zip(result.regions, data["regions"])):
        assert item["id"] == i
        assert np.array_equal(decode_rle(item["mask"]), region.mask) and region.mask.shape == (h, w)
        assert item["bbox"] == list(mask_bbox(region.mask)) and item["area"] == int(region.mask.sum()) > 0
        assert len(item["concepts"]) == 3 and item["concept"] == item["concepts"][0][0] in names
        assert isinstance(item["caption"], str) and item["mask_index"] in (1, 2, 3)
        assert item["score"] > -100 and 0 <= item["stability"] <= 1
    scores = [r.score for r in result.regions]
    assert scores == sorted(scores, reverse=True)


def test_routed_masks_match_the_predictor(tiny_model, rgb_image):
    """With every filter open, the 'best' mode gives, per grid point, what the predictor
    gives for that click."""
    config = EverythingConfig(points_per_side=3, masks_per_point="best", pred_iou_thresh=-1e9, stability_thresh=0.0, box_nms_thresh=1.0, captions=False, top_k=1)
    result = EverythingGenerator(tiny_model, config).generate(rgb_image)
    predictor = tapkit.Predictor(tiny_model)
    predictor.set_image(rgb_image)
    for region in result.regions:
        (expected,) = predictor.predict([tapkit.Prompt(points=[(*region.point, 1)])], top_k=1, captions=False)
        assert np.array_equal(region.mask, expected.mask)
        # A batch of 9 prompts and a single prompt take different matmul kernels: equal to
        # float32 rounding, not bit for bit.
        assert region.score == pytest.approx(expected.score, abs=1e-5) and region.mask_index == expected.mask_index
        assert region.concept == expected.concept


def test_crops_layer(tiny_model, rgb_image):
    config = EverythingConfig(points_per_side=4, crop_layers=1, crop_points_downscale=2, pred_iou_thresh=-100.0, stability_thresh=0.0, captions=False)
    result = EverythingGenerator(tiny_model, config).generate(rgb_image)
    h, w = rgb_image.shape[:2]
    assert result.counts.points == 16 + 4 * 4
    for region in result.regions:
        x, y, cw, ch = region.crop_box
        outside = np.ones((h, w), dtype=bool)
        outside[y : y + ch, x : x + cw] = False
        assert not region.mask[outside].any()


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError):
        EverythingConfig(points_per_side=0)
    with pytest.raises(UserError):
        EverythingConfig(masks_per_point="some")


def test_max_border_connectivity_drops_masks_along_the_border(hand_made, monkeypatch):
    model, tokens, _ = hand_made
    strip = rect(0, 0, 32, 3)  # a band along the top edge of the image: background-like
    logits = torch.stack([torch.stack([EVERYTHING, A, strip, EMPTY])] * 4)
    iou = torch.tensor([[0.1, 0.95, 0.97, 0.1]] * 4)
    monkeypatch.setattr(model, "decode", lambda image_embed, xy, labels: DecoderOutput(logits, iou, tokens, tokens[..., :0]))
    loose = dict(SETTINGS, captions=False, top_k=0)
    both = EverythingGenerator(model, EverythingConfig(**loose)).generate(IMAGE)
    assert [r.score for r in both.regions] == pytest.approx([0.97, 0.95])
    kept = EverythingGenerator(model, EverythingConfig(**loose, max_border_connectivity=1.0)).generate(IMAGE)
    assert [r.score for r in kept.regions] == pytest.approx([0.95])
    assert kept.counts.passed_iou == 8 and kept.counts.passed_stability == 4
    off = EverythingConfig(**loose, max_border_connectivity=float("inf"))
    assert off.max_border_connectivity is None and json.dumps(off.to_dict())
    with pytest.raises(UserError):
        EverythingConfig(max_border_connectivity=-1)


def test_rank_by_stability_keeps_the_stabler_of_two_overlapping_masks(hand_made, monkeypatch):
    model, tokens, _ = hand_made
    ragged = A.clone()
    ragged[10:12, 2:10] = 0.5  # two extra rows, in the mask at logit 0 but not at +1: stability about 0.8
    logits = torch.stack([torch.stack([EVERYTHING, A, ragged, EMPTY])] * 4)
    iou = torch.tensor([[0.1, 0.90, 0.97, 0.1]] * 4)
    monkeypatch.setattr(model, "decode", lambda image_embed, xy, labels: DecoderOutput(logits, iou, tokens, tokens[..., :0]))
    loose = dict(SETTINGS, pred_iou_thresh=0.5, stability_thresh=0.5, captions=False, top_k=0)
    by_iou = EverythingGenerator(model, EverythingConfig(**loose)).generate(IMAGE)
    by_stability = EverythingGenerator(model, EverythingConfig(**loose, rank_by="stability")).generate(IMAGE)
    assert [r.score for r in by_iou.regions] == pytest.approx([0.97]) and by_iou.regions[0].stability < 1
    assert [r.score for r in by_stability.regions] == pytest.approx([0.90]) and by_stability.regions[0].stability == 1.0
    with pytest.raises(UserError):
        EverythingConfig(rank_by="area")


def test_concept_vote_names_a_region_by_the_candidates_that_found_it(hand_made, monkeypatch):
    from tapkit.models.tap.concepts import ConceptVocabulary

    model, tokens, _ = hand_made
    dim = model.cfg.image_decoder.sem_embed_dim
    vocabulary = ConceptVocabulary(torch.eye(dim)[:, :3] * 20, ["red circle", "red square", "blue star"])
    monkeypatch.setattr(model, "concepts", vocabulary)
    # point 0 finds A named "red circle"; points 1 and 2 find A_SHIFTED (mask IoU 0.89 with A,
    # lower predicted IoU, so box NMS drops them) named "red square"; point 3 finds C, "blue star".
    logits = torch.stack([torch.stack([EVERYTHING, m, EMPTY, EMPTY]) for m in (A, A_SHIFTED, A_SHIFTED, C)])
    iou = torch.tensor([[0.1, score, 0.1, 0.1] for score in (0.95, 0.92, 0.92, 0.93)])
    embeds = torch.zeros(4, 4, dim)
    for point, concept in enumerate((0, 1, 1, 2)):
        embeds[point, 1, concept] = 1.0
    monkeypatch.setattr(model, "decode", lambda image_embed, xy, labels: DecoderOutput(logits, iou, tokens, embeds))
    settings = dict(SETTINGS, captions=False, top_k=2)
    own = EverythingGenerator(model, EverythingConfig(**settings)).generate(IMAGE)
    voted = EverythingGenerator(model, EverythingConfig(**settings, concept_vote_iou=0.8)).generate(IMAGE)
    strict = EverythingGenerator(model, EverythingConfig(**settings, concept_vote_iou=0.95)).generate(IMAGE)
    assert [r.score for r in own.regions] == [r.score for r in voted.regions] == pytest.approx([0.95, 0.93])
    assert [r.concept for r in own.regions] == ["red circle", "blue star"]
    assert [r.concept for r in voted.regions] == ["red square", "blue star"]  # 2 votes of 3 for the square
    # the mean of three probabilities: about 0 from A's own candidate, about 1 from each shifted one
    assert voted.regions[0].concept_score == pytest.approx(2 * own.regions[0].concept_score / 3, abs=1e-6)
    assert [r.concept for r in strict.regions] == ["red circle", "blue star"]  # only A itself overlaps A that much
    assert EverythingConfig(concept_vote_iou=0).concept_vote_iou is None  # 0: off
    with pytest.raises(UserError):
        EverythingConfig(concept_vote_iou=1.5)


def test_the_predicted_iou_shown_stays_within_0_and_1(hand_made, monkeypatch):
    model, tokens, _ = hand_made
    logits = torch.stack([torch.stack([EVERYTHING, A, C, EMPTY])] * 4)
    iou = torch.tensor([[0.1, 1.04, 0.93, 0.1]] * 4)  # the IoU head is a regression: it can step past 1
    monkeypatch.setattr(model, "decode", lambda image_embed, xy, labels: DecoderOutput(logits, iou, tokens, tokens[..., :0]))
    result = EverythingGenerator(model, EverythingConfig(**SETTINGS, captions=False, top_k=0)).generate(IMAGE)
    assert [r.score for r in result.regions] == pytest.approx([1.04, 0.93])  # ranked on the raw value
    shown = [r["score"] for r in result.to_json()["regions"]]
    assert shown == pytest.approx([1.0, 0.93]) and all(0.0 <= s <= 1.0 for s in shown)
