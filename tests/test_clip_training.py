"""Stage `clip` of the training engine: batches, the contrastive loss, resuming exactly,
DDP under torchrun (gloo, 2 processes), and the exported CLIP loading with load_clip."""

import textwrap

import numpy as np
import pytest
import torch

import tapkit
from tapkit.data.records import Region
from tapkit.data.crops import square_crop
from tapkit.training.stages.clip import build_model, caption_head, contrastive_loss, make_batches
from tapkit.training.config import config_from_dict
from tapkit.training.engine import train
from tapkit.testing import train_clip_vocab
from training_helpers import run_two_ranks


@pytest.fixture(scope="module")
def clip_vocab(tmp_path_factory):
    return train_clip_vocab(tmp_path_factory.mktemp("clip_vocab"))


def clip_config(world, vocab, out_dir, **overrides) -> dict:
    cfg = {"stage": "clip", "out_dir": str(out_dir), "steps": 4, "batch_images": 6, "log_every": 1, "ckpt_every": 2,
           "data": {"sa1b": str(world.sa1b)},
           "clip": {"tokenizer": str(vocab), "embed_dim": 16,
                    "vision": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "heads": 2},
                    "text": {"context_length": 16, "width": 32, "heads": 2, "layers": 1}},
           "optim": {"lr": 3e-3, "warmup_steps": 1}}
    cfg.update(overrides)
    return cfg


def test_contrastive_targets_spread_over_samples_of_one_meaning():
    """Samples 0 and 1 mean the same: spread targets prefer them identical, diagonal
    targets (plain CLIP) prefer them apart."""
    separate = torch.nn.functional.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    identical = separate.clone()
    identical[1] = identical[0]
    same = torch.tensor([[True, True, False, False], [True, True, False, False],
                         [False, False, True, False], [False, False, False, True]])
    diagonal = torch.eye(4, dtype=torch.bool)
    scale = torch.tensor(20.0)

    def loss(features, positives):
        return float(contrastive_loss(features, features, scale, positives)[0])

    assert loss(identical, same) < loss(separate, same)
    assert loss(separate, diagonal) < loss(identical, diagonal)
    assert loss(identical, same) == pytest.approx(np.log(2) / 2, abs=0.05)  # entropy of the spread targets


def test_crops_stay_inside_the_image_and_contain_the_box():
    rgb = np.zeros((100, 80, 3), np.uint8)
    for bbox in [(0, 0, 10, 10), (70, 90, 10, 10), (20, 30, 60, 40), (0, 0, 80, 100)]:
        for shift in [(0.0, 0.0), (0.1, -0.1)]:
            crop = square_crop(rgb, bbox, 1.4, shift)
            assert crop.shape[0] == crop.shape[1] == round(min(max(bbox[2:]) * 1.4, 80))
    rgb[50:60, 40:50] = 255
    assert square_crop(rgb, (40, 50, 10, 10), 1.0).min() == 255
    assert caption_head(Region(1, (0, 0, 1, 1), None, "red circle", "a small striped red circle left of a blue star")) \
        == "a small striped red circle"
    assert caption_head(Region(1, (0, 0, 1, 1), None, "red circle", None)) == "a red circle"


def test_batches_pair_crops_with_their_names(tiny_world, clip_vocab, tmp_path):
    cfg = config_from_dict(clip_config(tiny_world, clip_vocab, tmp_path, **{"batch_images": 8}))
    model = build_model(cfg)
    batches = make_batches(cfg, model, rank=0, world_size=1)
    a, b = batches[3], batches[3]
    assert a.images.shape == (8, 3, 32, 32) and a.tokens.shape == (8, 16)
    assert torch.equal(a.images, b.images) and torch.equal(a.tokens, b.tokens)  # a function of the step
    assert a.positives.diagonal().all() and torch.equal(a.positives, a.positives.t())
    assert not torch.equal(batches[4].tokens, a.tokens)


def test_clip_stage_learns_resumes_exactly_and_exports_a_loadable_clip(tiny_world, clip_vocab, tmp_path):
    whole = train(config_from_dict(clip_config(tiny_world, clip_vocab, tmp_path / "whole", steps=6)), progress=False)
    assert whole.final_loss < whole.first_loss
    cfg = config_from_dict(clip_config(tiny_world, clip_vocab, tmp_path / "parts", steps=6))
    train(cfg, progress=False, stop_after=2)
    resumed = train(cfg, progress=False)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    clip = tapkit.load_clip(resumed.export, tokenizer=clip_vocab)
    assert clip.model.cfg.vision.layers == 2 and clip.model.cfg.quick_gelu is False
    assert torch.allclose(clip.model.visual.proj, resumed.model.visual.proj)
    assert clip.encode_text(["a red circle"]).shape == (1, 16)


DDP_WORKER = textwrap.dedent("""
    import os, sys, torch
    from tapkit.training.config import load_config
    from tapkit.training.engine import train
    result = train(load_config(sys.argv[1]), progress=False)
    torch.save({k: v.detach() for k, v in result.model.named_parameters()},
               os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.pt"))
""")


def test_two_process_gloo_ddp_ends_with_identical_weights(tiny_world, clip_vocab, tmp_path):
    a, b = run_two_ranks(DDP_WORKER, clip_config(tiny_world, clip_vocab, tmp_path / "run", steps=2, ckpt_every=100), tmp_path)
    fresh = build_model(config_from_dict(clip_config(tiny_world, clip_vocab, tmp_path / "x")))
    assert set(a) == {k for k, _ in fresh.named_parameters()}
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], p.detach()) for k, p in fresh.named_parameters())


def test_region_samples_run_sans_recognition_with_the_mask_as_bias(tiny_world, clip_vocab, tmp_path):
    from tapkit.training.stages.clip import ClipObjective, region_bias

    overrides = {"region_prob": 0.5, "region_size": 32, "region_start": 1}
    raw = clip_config(tiny_world, clip_vocab, tmp_path / "r")
    raw["clip"].update(overrides)
    cfg = config_from_dict(raw)
    model = build_model(cfg)
    batch = make_batches(cfg, model, 0, 1)[3]
    regions = batch.region_images.shape[0]
    assert 0 < regions < 6 and batch.images.shape[0] == 6 - regions and batch.region_bias.shape == (regions, 1, 4, 4)
    assert batch.region_valid.all()
    assert batch.tokens.shape[0] == 6 and batch.positives.shape == (6, 6)
    out = ClipObjective(model, 1)(batch)
    out.total.backward()
    assert torch.isfinite(out.total) and model.visual.transformer.resblocks[1].attn.in_proj_weight.grad is not None
    mask = np.zeros((40, 40), bool)
    mask[:10, :10] = True
    bias = region_bias(mask, 4, 32)
    assert bias[0, 0] == 0 and (bias.flatten()[1:] == -100).all()


def test_one_pass_recognises_several_regions_of_an_image_as_one_at_a_time(tiny_world, clip_vocab, tmp_path):
    """regions_per_image: 0 takes every named region of a region sample's image; each
    region's embedding from the shared pass equals the one recognised alone."""
    from tapkit.training.stages.clip import ClipObjective, region_embeddings

    raw = clip_config(tiny_world, clip_vocab, tmp_path / "m")
    raw["clip"].update({"region_prob": 1.0, "region_size": 32, "region_start": 1, "regions_per_image": 0,
                        "region_hflip_prob": 0.5})
    cfg = config_from_dict(raw)
    model = build_model(cfg).eval()
    batch = make_batches(cfg, model, 0, 1)[2]
    assert batch.images is None and batch.region_images.shape[0] == 6
    count = int(batch.region_valid.sum())
    assert count > 6 and batch.tokens.shape[0] == count and batch.positives.shape == (count, count)
    with torch.no_grad():
        shared = region_embeddings(model, batch.region_images, batch.region_bias, 1)
        i, k = [int(v) for v in batch.region_valid.nonzero()[-1]]
        alone = region_embeddings(model, batch.region_images[i:i + 1], batch.region_bias[i:i + 1, k:k + 1], 1)
    assert torch.allclose(shared[i, k], alone[0, 0], atol=1e-5)
    out = ClipObjective(model.train(), 1)(batch)
    out.total.backward()
    assert torch.isfinite(out.total)


def test_regions_per_image_must_not_be_negative(tiny_world, clip_vocab, tmp_path):
    from tapkit.errors import UserError

    raw = clip_config(tiny_world, clip_vocab, tmp_path / "n")
    raw["clip"]["regions_per_image"] = -1
    with pytest.raises(UserError, match="regions_per_image"):
        config_from_dict(raw)


def test_the_dense_term_names_each_patch_by_the_region_covering_it(tiny_world, clip_vocab, tmp_path):
    """region_owner points at the region sample covering the patch most (at least half),
    -1 elsewhere; the shared pass gives region_embeddings' embeddings; the dense term
    reaches the patch embedding and goes down when the patches match their texts."""
    from tapkit.training.stages.clip import (ClipObjective, region_coverage, region_embeddings,
                                             regions_and_patches)

    raw = clip_config(tiny_world, clip_vocab, tmp_path / "p")
    raw["clip"].update({"region_prob": 1.0, "region_size": 32, "region_start": 1, "regions_per_image": 0,
                        "patch_loss_weight": 1.0})
    cfg = config_from_dict(raw)
    model = build_model(cfg).eval()
    batches = make_batches(cfg, model, 0, 1)
    batch = batches[1]
    assert batch.region_owner.shape == (6, 16)
    owned = batch.region_owner[batch.region_owner >= 0]
    assert len(owned) and owned.max() < batch.tokens.shape[0]
    # Recompute image 0's owners from its own regions' masks.
    record, rgb = batches._image(1, 0)
    drawn = batches.sample(1, 0)
    cover = torch.stack([region_coverage(m, 4, 32).flatten() for m in drawn[3]])
    best, which = cover.max(0)
    assert torch.equal(batch.region_owner[0], torch.where(best >= 0.5, which, -1))
    with torch.no_grad():
        shared, patches = regions_and_patches(model, batch.region_images, batch.region_bias, 1)
        alone = region_embeddings(model, batch.region_images, batch.region_bias, 1)
    assert torch.allclose(shared, alone, atol=1e-5) and patches.shape == (6, 16, 16)
    objective = ClipObjective(model.train(), 1, patch_weight=1.0)
    out = objective(batch)
    assert "patch" in out.parts and out.total > out.parts["contrastive"]
    out.total.backward()
    assert model.visual.transformer.resblocks[-1].mlp.c_proj.weight.grad.abs().sum() > 0
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    first = out.parts["patch"]
    for _ in range(15):
        optimizer.zero_grad()
        out = objective(batch)
        out.total.backward()
        optimizer.step()
    assert objective(batch).parts["patch"] < first


def test_the_vocabulary_term_classifies_every_named_sample_among_all_names(tiny_world, clip_vocab, tmp_path):
    """name_index is each sample's concept among the data's sorted names (-1 for scenes);
    the term equals a cross-entropy against the template-mean name embeddings computed
    here from the text tower, and it trains both towers."""
    import torch.nn.functional as F

    from tapkit.data.text_encoders import DEFAULT_TEMPLATES
    from tapkit.training.stages.clip import ClipObjective

    raw = clip_config(tiny_world, clip_vocab, tmp_path / "v", batch_images=8)
    raw["clip"].update({"names_loss_weight": 1.0, "scene_prob": 0.5, "region_prob": 0.3, "region_size": 32,
                        "region_start": 1, "regions_per_image": 0})
    cfg = config_from_dict(raw)
    model = build_model(cfg).train()
    batches = make_batches(cfg, model, 0, 1)
    names = batches.names
    assert names == sorted({reg.concept for r in batches.records for reg in r.regions if reg.concept})
    batch = next(b for b in (batches[s] for s in range(20)) if (b.name_index == -1).any() and (b.name_index >= 0).any()
                 and b.region_images is not None)
    assert batch.name_tokens.shape[0] == len(names) * len(DEFAULT_TEMPLATES)
    assert len(batch.name_index) == batch.tokens.shape[0] and batch.name_index.max() < len(names)
    objective = ClipObjective(model, 1, names_weight=1.0)
    out = objective(batch)
    assert "names" in out.parts
    assert out.total.item() == pytest.approx(out.parts["contrastive"] + out.parts["names"], rel=1e-5)
    # Recompute the term from the towers themselves.
    with torch.no_grad():
        from tapkit.training.stages.clip import region_embeddings

        image = torch.cat([F.normalize(model.encode_image(batch.images), dim=-1),
                           region_embeddings(model, batch.region_images, batch.region_bias, 1)[batch.region_valid]])
        per_name = torch.stack([F.normalize(F.normalize(model.encode_text(model_tokens), dim=-1).mean(0), dim=0)
                                for model_tokens in batch.name_tokens.split(len(DEFAULT_TEMPLATES))])
        named = batch.name_index >= 0
        expected = F.cross_entropy(model.logit_scale.exp() * image[named] @ per_name.t(), batch.name_index[named])
    assert out.parts["names"] == pytest.approx(expected.item(), rel=1e-4)
    out.total.backward()
    assert model.token_embedding.weight.grad.abs().sum() > 0 and model.visual.conv1.weight.grad.abs().sum() > 0
    # Off by default: no vocabulary in the batch, no term.
    plain = make_batches(config_from_dict(clip_config(tiny_world, clip_vocab, tmp_path / "w")), model, 0, 1)[0]
    assert plain.name_tokens is None and "names" not in ClipObjective(model)(plain).parts
    raw["clip"]["names_loss_weight"] = -1.0
    from tapkit.errors import UserError

    with pytest.raises(UserError, match="names_loss_weight"):
        config_from_dict(raw)


def test_quarter_turns_rotate_crops_and_region_masks_together_and_never_scenes(tiny_world, clip_vocab, tmp_path):
    """rot90_prob turns crop and region samples (a region's mask with its image); at 0 the
    samples are exactly those of a config without the option; scenes are never turned."""
    raw = clip_config(tiny_world, clip_vocab, tmp_path / "t", batch_images=8)
    raw["clip"].update({"region_prob": 0.5, "regions_per_image": 0, "scene_prob": 0.3})
    plain = make_batches(config_from_dict(raw), build_model(config_from_dict(raw)), 0, 1)
    raw["clip"]["rot90_prob"] = 0.0
    zero = make_batches(config_from_dict(raw), build_model(config_from_dict(raw)), 0, 1)
    for step in range(3):
        a, b = plain.sample(step, 0), zero.sample(step, 0)
        assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    raw["clip"]["rot90_prob"] = 1.0
    turned = make_batches(config_from_dict(raw), build_model(config_from_dict(raw)), 0, 1)
    kinds = {"crop": 0, "region": 0, "scene": 0}
    for step in range(40):
        record, rgb = turned._image(step, 0)
        image, texts, meanings, masks = turned.sample(step, 0)
        if masks is not None:  # the image is one of rgb's 8 flips / quarter turns, never rgb itself
            kinds["region"] += 1
            views = [(flip, k) for flip in (False, True) for k in (1, 2, 3)]
            view = lambda a, flip, k: np.rot90(a[:, ::-1] if flip else a, k)
            match = [v for v in views if np.array_equal(image, view(rgb, *v))]
            assert match and not any(np.array_equal(image, v) for v in (rgb, rgb[:, ::-1]))
            originals = [(r.concept, view(r.mask(*rgb.shape[:2]), *match[0])) for r in record.regions if r.concept]
            for mask, meaning in zip(masks, meanings):  # each mask turned with its image
                assert any(c == meaning and np.array_equal(mask, m) for c, m in originals)
        elif meanings[0] == texts[0] and meanings[0] not in turned.names:
            kinds["scene"] += 1
            assert np.array_equal(image, rgb)
        else:
            kinds["crop"] += 1
    assert all(kinds.values()), kinds
    raw["clip"]["rot90_prob"] = 1.5
    from tapkit.errors import UserError

    with pytest.raises(UserError, match="rot90_prob"):
        config_from_dict(raw)


def test_without_the_contrastive_term_only_the_vocabulary_term_trains(tiny_world, clip_vocab, tmp_path):
    from tapkit.errors import UserError
    from tapkit.training.stages.clip import ClipObjective

    raw = clip_config(tiny_world, clip_vocab, tmp_path / "c", batch_images=8)
    raw["clip"].update({"names_loss_weight": 1.0, "contrastive_weight": 0.0})
    cfg = config_from_dict(raw)
    model = build_model(cfg).train()
    batch = make_batches(cfg, model, 0, 1)[1]
    out = ClipObjective(model, names_weight=1.0, contrastive_weight=0.0)(batch)
    assert "contrastive" not in out.parts and out.total.item() == pytest.approx(out.parts["names"], rel=1e-6)
    both = ClipObjective(model, names_weight=1.0)(batch)
    assert both.total.item() == pytest.approx(both.parts["contrastive"] + both.parts["names"], rel=1e-5)
    raw["clip"]["names_loss_weight"] = 0.0
    with pytest.raises(UserError, match="needs a loss"):
        config_from_dict(raw)
    raw["clip"]["contrastive_weight"] = -1.0
    with pytest.raises(UserError, match="contrastive_weight"):
        config_from_dict(raw)
