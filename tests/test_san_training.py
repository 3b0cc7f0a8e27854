"""Stage `san`: the Mask2Former criterion (matching against brute force, losses that
prefer the right answer), the synthetic label maps with the unseen names ignored, batches,
resuming exactly, DDP under torchrun (gloo, 2 processes), and the export loading."""

import itertools
import textwrap

import numpy as np
import pytest
import torch

import tapkit
from tapkit.data.semseg import open_dataset, read_label_map
from tapkit.data.synth_semseg import UNSEEN, semseg_classes
from tapkit.models.san.model import SanModel
from tapkit.testing import make_tiny_clip
from tapkit.training.config import config_from_dict
from tapkit.training.engine import train
from tapkit.training.mask_criterion import (CriterionConfig, SemanticTarget, hungarian_match,
                                            mask_classification_loss, pairwise_costs, point_sample)
from tapkit.training.stages.san import crop_sample, make_batches, semantic_target, training_vocabulary

from san_helpers import san_config, tiny_semseg
from training_helpers import run_two_ranks


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("san_clip"))


@pytest.fixture(scope="module")
def semseg(tmp_path_factory):
    return tiny_semseg(tmp_path_factory.mktemp("semseg"))


def test_matching_is_the_cheapest_assignment():
    g = torch.Generator().manual_seed(0)
    masks = torch.randn(4, 8, 8, generator=g)
    classes = torch.randn(4, 4, generator=g)
    target = SemanticTarget(torch.tensor([0, 2, 1]), (torch.rand(3, 16, 16, generator=g) > 0.5).float())
    cfg = CriterionConfig(num_points=4096)
    rows, cols = hungarian_match(masks, classes, target, cfg, torch.Generator().manual_seed(1))
    coords = torch.rand(1, 4096, 2, generator=torch.Generator().manual_seed(1))
    bce, dice = pairwise_costs(point_sample(masks, coords.expand(4, -1, -1)), point_sample(target.masks, coords.expand(3, -1, -1)))
    cost = (5 * bce + 5 * dice - 2 * classes.softmax(-1)[:, target.labels]).numpy()
    best = min(itertools.permutations(range(4), 3), key=lambda p: sum(cost[p[k], k] for k in range(3)))
    assert sorted(zip(cols.tolist(), rows.tolist())) == [(k, best[k]) for k in range(3)]


def test_loss_prefers_the_right_masks_and_classes():
    target = torch.zeros(2, 32, 32)
    target[0, :, :16], target[1, :, 16:] = 1, 1
    t = [SemanticTarget(torch.tensor([1, 0]), target)]
    right_masks = (target * 20 - 10).unsqueeze(0)
    right_masks = torch.cat([right_masks, torch.full((1, 1, 32, 32), -10.0)], 1)  # a third, unmatched query
    right_classes = torch.tensor([[[-5.0, 5, -5], [5, -5, -5], [-5, -5, 5]]])
    cfg = CriterionConfig(num_points=512)
    good, parts = mask_classification_loss([(right_masks, right_classes)], t, cfg, torch.Generator().manual_seed(0))
    swapped, _ = mask_classification_loss([(right_masks, right_classes[:, [1, 0, 2]])], t, cfg, torch.Generator().manual_seed(0))
    blurred, _ = mask_classification_loss([(right_masks * 0, right_classes)], t, cfg, torch.Generator().manual_seed(0))
    assert good < swapped and good < blurred and parts["loss_dice"] < 0.1
    two, parts2 = mask_classification_loss([(right_masks, right_classes)] * 2, t, cfg, torch.Generator().manual_seed(0))
    assert "loss_ce_aux1" in parts2 and two == pytest.approx(2 * float(good), rel=0.05)


def test_synthetic_label_maps_hide_the_unseen_names_in_the_training_split(tmp_path):
    train_root = tiny_semseg(tmp_path / "train", images=30, hide_unseen=True)
    eval_root = tiny_semseg(tmp_path / "eval", images=30, hide_unseen=False)
    classes = semseg_classes()
    unseen = {classes.index(n) for n in UNSEEN}
    train_set, eval_set = open_dataset("synthetic", train_root, "train"), open_dataset("synthetic", eval_root)
    assert train_set.classes == classes and eval_set.unseen == UNSEEN
    seen_in_eval = set()
    for (_, a), (_, b) in zip(train_set.samples, eval_set.samples):
        la, lb = read_label_map(a), read_label_map(b)
        assert not (set(np.unique(la)) & unseen)
        hidden = np.isin(lb, list(unseen))
        assert np.all(la[hidden] == 255) and np.array_equal(la[~hidden], lb[~hidden])
        seen_in_eval |= set(np.unique(lb)) & unseen
    assert seen_in_eval  # the eval split does label them


def test_batches_targets_one_mask_per_class_present(tiny_clip, semseg, tmp_path):
    cfg = config_from_dict(san_config(tiny_clip.folder, semseg, tmp_path / "run", batch_images=3))
    names, lookup = training_vocabulary(open_dataset("synthetic", semseg, "train"), cfg.san.exclude_classes)
    assert len(names) == 41 and "background" in names and not set(UNSEEN) & set(names)
    assert lookup[255] == -1 and lookup[semseg_classes().index("red star")] == -1
    model = SanModel.__new__(SanModel)
    model.cfg = type("C", (), {"clip": tiny_clip.config})()
    batches = make_batches(cfg, model, rank=0, world_size=1)
    a, b = batches[5], batches[5]
    assert a.images.shape == (3, 3, 64, 64) and torch.equal(a.images, b.images)
    for t in a.targets:
        assert len(t.labels) == len(set(t.labels.tolist())) and t.masks.shape[1:] == (64, 64)
        assert torch.all(t.masks.sum(0) <= 1) and t.labels.max() < 41


def test_crop_pads_with_ignore_and_targets_skip_it():
    rgb = np.full((20, 40, 3), 100, np.uint8)
    labels = np.zeros((20, 40), np.int64)
    labels[:, 20:] = 3
    img, lab = crop_sample(rgb, labels, crop=32, scale=0.5, flip=False, rng=np.random.default_rng(0))
    assert img.shape == (32, 32, 3) and (lab[16:] == -1).all() and set(np.unique(lab[:16])) <= {0, 3}
    target = semantic_target(lab)
    assert set(target.labels.tolist()) <= {0, 3} and target.masks[:, 16:].sum() == 0


def test_train_resume_exactly_and_load_the_export(tiny_clip, semseg, tmp_path):
    whole = train(config_from_dict(san_config(tiny_clip.folder, semseg, tmp_path / "whole", steps=4)), progress=False)
    cfg = config_from_dict(san_config(tiny_clip.folder, semseg, tmp_path / "parts", steps=4))
    train(cfg, progress=False, stop_after=2)
    resumed = train(cfg, progress=False)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    fresh = tapkit.load_clip(tiny_clip.folder).model
    assert torch.equal(a["clip.visual.transformer.resblocks.4.attn.in_proj_weight"],
                       fresh.visual.transformer.resblocks[4].attn.in_proj_weight)  # CLIP frozen
    assert not torch.equal(a["clip.visual.positional_embedding"], fresh.visual.positional_embedding)  # as SAN
    model = tapkit.load_model(resumed.export)
    assert isinstance(model, SanModel) and model.cfg == resumed.model.cfg


DDP_WORKER = textwrap.dedent("""
    import os, sys, torch
    from tapkit.training.config import load_config
    from tapkit.training.engine import train
    result = train(load_config(sys.argv[1]), progress=False)
    torch.save({k: v.detach() for k, v in result.model.named_parameters() if v.requires_grad},
               os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.pt"))
""")


def test_two_process_gloo_ddp_ends_with_identical_weights(tiny_clip, semseg, tmp_path):
    a, b = run_two_ranks(DDP_WORKER, san_config(tiny_clip.folder, semseg, tmp_path / "run", steps=2, ckpt_every=100), tmp_path)
    assert "side.query_embed" in a and not any(k.startswith("clip.text") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_poly_schedule_is_detectron2s_warmup_poly():
    from tapkit.training.engine import lr_at

    cfg = config_from_dict({"stage": "san", "steps": 100, "optim": {"lr": 1e-3, "warmup_steps": 10, "schedule": "poly"}})
    assert lr_at(4, cfg) == pytest.approx(5e-4)
    assert lr_at(50, cfg) == pytest.approx(1e-3 * 0.5**0.9)
    assert lr_at(99, cfg) < 2e-5
    with pytest.raises(tapkit.UserError, match="schedule"):
        config_from_dict({"optim": {"schedule": "step"}})
