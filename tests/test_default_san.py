"""The packaged open-vocabulary segmenter: small, float16 on disk, built on the packaged
CLIP (its text tower is that CLIP's), loads with no path, and labels held-out synthetic
scenes better than chance would."""

import numpy as np
import torch

import tapkit
from tapkit.data.synth import generate_scene
from tapkit.data.synth_semseg import semseg_classes, label_map
from tapkit.defaults import default_san_dir
from tapkit.evaluation.semseg_metrics import confusion, scores


def test_packaged_san_is_small_float16_and_on_the_packaged_clip():
    folder = default_san_dir()
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 8 * 1024 * 1024
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert f.get_tensor("side.query_embed").dtype == torch.float16
    seg = tapkit.load_segmenter()
    clip = tapkit.load_clip()
    assert all(p.dtype == torch.float32 for p in seg.model.parameters())
    assert seg.model.cfg.clip == clip.model.cfg
    ours, theirs = seg.model.clip.state_dict(), clip.model.state_dict()
    frozen = [k for k in theirs if k != "visual.positional_embedding"]
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-3) for k in frozen)  # CLIP frozen (float16 on disk)


def test_packaged_san_labels_held_out_scenes():
    seg = tapkit.load_segmenter()
    classes = semseg_classes()
    conf = 0
    for index in range(8):
        scene = generate_scene(seed=7, index=index)
        gt = label_map(scene, classes)
        pred = seg.segment(scene.image, classes).label_map
        conf = conf + confusion(pred, gt, len(classes), 255)
    s = scores(conf)
    assert s.pacc > 60 and s.per_class_iou[0] > 60, (s.pacc, s.per_class_iou[0])  # background is 0
