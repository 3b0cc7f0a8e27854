"""Automatic mode on a SAM checkpoint is SamAutomaticMaskGenerator's answer.

segment-anything is not installable here, so the reference below is written from its
documented steps (automatic_mask_generator.py, predictor.py, utils/amg.py,
utils/transforms.py), in plain numpy / torch, sharing only the network (the tiny random
SAM's `encode_image` and `decode`) with tapkit. It differs from the official code in one
detail: it hands the prompt encoder float32 coordinates, as SamPredictor.predict does,
where the official automatic generator hands it float64 and casts after normalizing
(at most one float32 ulp in the normalized coordinate)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

import tapkit
from tapkit.everything import EverythingConfig, EverythingGenerator
from tapkit.inputs.labels import FOREGROUND, PADDING

# Height 96 and width 144 at encoder size 128 resize to 85 x 128: the axes scale by
# 85/96 and 128/144, which a single scale factor cannot express.
HEIGHT, WIDTH = 96, 144


@pytest.fixture
def image():
    rng = np.random.default_rng(3)
    rgb = (rng.random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)
    rgb[10:50, 20:100] = (30, 200, 60)
    return rgb


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def recording(model, monkeypatch):
    """Wraps the model's decode so every (xy, labels) it is fed is kept."""
    seen = []
    real = model.decode

    def decode(image_embed, xy, labels):
        seen.append((xy.clone(), labels.clone()))
        return real(image_embed, xy, labels)

    monkeypatch.setattr(model, "decode", decode)
    return seen


def sam_grid(n: int, height: int, width: int) -> np.ndarray:
    """build_point_grid(n) scaled to the image: (n^2, 2) float64 [x, y], x fastest."""
    offset = 1 / (2 * n)
    side = np.linspace(offset, 1 - offset, n)
    xs, ys = np.tile(side[None, :], (n, 1)), np.tile(side[:, None], (1, n))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2) * np.array([width, height])[None]


def sam_apply_coords(points: np.ndarray, height: int, width: int, long_side: int) -> np.ndarray:
    """ResizeLongestSide.apply_coords: per-axis new/old scale in float64."""
    scale = long_side / max(height, width)
    new_h, new_w = int(height * scale + 0.5), int(width * scale + 0.5)
    coords = points.astype(float).copy()
    coords[..., 0] = coords[..., 0] * (new_w / width)
    coords[..., 1] = coords[..., 1] * (new_h / height)
    return coords


def test_a_click_gets_sams_coordinates(tiny_sam, image, monkeypatch):
    """The issue's example: on a 96 x 144 image at size 128, a click at (72, 72) is fed
    to the decoder at (64.0, 63.75) (x by 128/144, y by 85/96), not at (64.0, 64.0)."""
    seen = recording(tiny_sam, monkeypatch)
    predictor = tapkit.Predictor(tiny_sam)
    predictor.set_image(image)
    predictor.predict([tapkit.Prompt(points=[(72, 72, 1)])], captions=False)
    (xy, labels), = seen
    assert xy[0, 0].tolist() == [64.0, 63.75]
    assert labels[0].tolist() == [FOREGROUND, PADDING]


def test_automatic_mode_feeds_sam_the_predictors_coordinates(tiny_sam, image, monkeypatch):
    seen = recording(tiny_sam, monkeypatch)
    config = EverythingConfig(points_per_side=4, pred_iou_thresh=-1e9, stability_thresh=0.0, captions=False, top_k=0)
    EverythingGenerator(tiny_sam, config).generate(image)
    (xy, labels), = seen
    grid = sam_grid(4, HEIGHT, WIDTH)
    expected = torch.as_tensor(sam_apply_coords(grid, HEIGHT, WIDTH, tiny_sam.image_size), dtype=torch.float)
    assert torch.equal(xy[:, 0], expected)
    assert labels.tolist() == [[FOREGROUND, PADDING]] * 16
    # one float32 scale (TAP's rule) would have put the y coordinates elsewhere
    assert not torch.equal(xy[:, 0, 1], torch.from_numpy(grid[:, 1].astype(np.float32) * np.float32(128 / 144)))
    # and each grid point is exactly the click SamPredictor (tapkit's Predictor) would feed
    predictor = tapkit.Predictor(tiny_sam)
    predictor.set_image(image)
    for k, (x, y) in enumerate(grid):
        predictor.predict([tapkit.Prompt(points=[(x, y, 1)])], captions=False)
        assert torch.equal(seen[-1][0][0], xy[k])


def sam_candidates(model, rgb, n, pred_iou_thresh, stability_thresh, offset=1.0):
    """SamAutomaticMaskGenerator's candidates of one crop (the whole image), before box
    NMS: (masks (K, H, W) bool, iou (K,), stability (K,), points (K, 2)), grid order."""
    h, w = rgb.shape[:2]
    size = model.image_size
    scale = size / max(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    resized = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.BILINEAR))
    with torch.inference_mode():
        embed = model.encode_image(torch.from_numpy(resized.copy()).permute(2, 0, 1)[None])
        grid = sam_grid(n, h, w)
        xy = torch.zeros((len(grid), 2, 2))
        xy[:, 0] = torch.as_tensor(sam_apply_coords(grid, h, w, size), dtype=torch.float)
        labels = torch.tensor([[FOREGROUND, PADDING]] * len(grid))
        out = model.decode(embed, xy, labels)
        # multimask_output=True: masks 1..3; postprocess_masks upscales every one
        low = out.mask_logits[:, 1:]
        up = F.interpolate(low, (size, size), mode="bilinear", align_corners=False)[..., :new_h, :new_w]
        up = F.interpolate(up, (h, w), mode="bilinear", align_corners=False).flatten(0, 1)
    iou = out.iou[:, 1:].flatten(0, 1)
    points = torch.as_tensor(grid.repeat(low.shape[1], axis=0))
    keep = iou > pred_iou_thresh
    up, iou, points = up[keep], iou[keep], points[keep]
    inner = (up > offset).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    outer = (up > -offset).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    stability = inner / outer
    keep = stability >= stability_thresh
    return up[keep] > 0, iou[keep], stability[keep], points[keep]


def test_automatic_mode_returns_sams_candidates(tiny_sam, image):
    _, all_iou, all_stability, _ = sam_candidates(tiny_sam, image, 4, -1e9, -1.0)
    # thresholds at the medians, so each filter keeps some candidates and drops others
    iou_thresh = float(all_iou.median())
    stability_thresh = float(all_stability[all_iou > iou_thresh].median())
    assert stability_thresh > 0
    masks, iou, stability, points = sam_candidates(tiny_sam, image, 4, iou_thresh, stability_thresh)
    assert 0 < len(iou) < (all_iou > iou_thresh).sum() < len(all_iou)

    # box NMS off (a threshold of 1 suppresses nothing), so the regions are the candidates
    config = EverythingConfig(points_per_side=4, pred_iou_thresh=iou_thresh, stability_thresh=stability_thresh, box_nms_thresh=1.0, captions=False, top_k=0)
    result = EverythingGenerator(tiny_sam, config).generate(image)
    order = torch.sort(iou, descending=True, stable=True).indices.tolist()
    assert len(result.regions) == len(order)
    for region, k in zip(result.regions, order):
        assert np.array_equal(region.mask, masks[k].numpy())
        assert region.score == pytest.approx(float(iou[k]), abs=1e-6)
        assert region.stability == pytest.approx(float(stability[k]), abs=1e-6)
        assert region.point == pytest.approx(tuple(points[k].tolist()))
