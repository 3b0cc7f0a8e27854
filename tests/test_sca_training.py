"""SCA through the training engine: large-scale jitter, step-indexed batches from region
captions and detection data, a tiny run that trains only the mixer, exact resume, and
an exported checkpoint that loads as an SCA."""

import numpy as np
import pytest
import torch
import transformers

import tapkit
from tapkit.models.sca.config import TASKS
from tapkit.models.sca.tokenizer import load_caption_tokenizer
from tapkit.testing import make_tiny_sam_checkpoint, randomize
from tapkit.training.config import config_from_dict
from tapkit.runtime import Runtime
from tapkit.training.engine import stage_for, train
from tapkit.training.lsj import large_scale_jitter
from tests.training_helpers import tiny_train_config


def test_lsj_without_range_fits_the_longest_side():
    rgb = np.zeros((50, 100, 3), np.uint8)
    out = large_scale_jitter(rgb, np.array([[10, 20, 29, 39]]), 64, None, np.random.default_rng(0))
    assert out.image.shape == (32, 64, 3)
    np.testing.assert_allclose(out.boxes, [[6.4, 12.8, 18.56, 24.96]], rtol=1e-5)
    assert out.keep.tolist() == [True]


def test_lsj_upscale_crops_a_window_and_moves_and_clips_boxes():
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, 32:] = 255  # right half white: shows where the window was cut
    boxes = np.array([[0, 0, 63, 63], [0, 0, 3, 3], [40, 40, 50, 50]], np.float32)
    out = large_scale_jitter(rgb, boxes, 64, (2.0, 2.0), np.random.default_rng(1))
    assert out.image.shape == (64, 64, 3)
    rng = np.random.default_rng(1)  # the same draws: scale factor, then the window's corner
    rng.uniform(2.0, 2.0)
    y0, x0 = int(rng.integers(0, 65)), int(rng.integers(0, 65))
    expected = np.clip(boxes * 2 - [x0, y0, x0, y0], 0, 63)
    np.testing.assert_allclose(out.boxes, expected)
    sides = np.minimum(expected[:, 2] - expected[:, 0], expected[:, 3] - expected[:, 1])
    assert out.keep.tolist() == (sides >= 2).tolist()
    white = 64 - x0  # first white column of the window
    assert out.image[:, min(white + 2, 63):, 0].min() == 255
    assert out.image[:, : max(white - 2, 0), 0].max(initial=0) == 0


def test_lsj_shrinks_and_flips():
    rgb = np.zeros((40, 40, 3), np.uint8)
    rng = np.random.default_rng(2)
    out = large_scale_jitter(rgb, np.array([[0, 0, 9, 19]]), 64, (0.5, 0.5), rng, hflip_prob=1.0)
    assert out.image.shape == (32, 32, 3)
    np.testing.assert_allclose(out.boxes, [[31 - 7.2, 0, 31, 15.2]], rtol=1e-5)


@pytest.fixture(scope="module")
def sca_parts(tmp_path_factory, tiny_world):
    root = tmp_path_factory.mktemp("sca_parts")
    backbone = make_tiny_sam_checkpoint(root / "sam.pth", seed=2, image_size=64)
    tok = load_caption_tokenizer(tiny_world.tokenizer)
    torch.manual_seed(0)
    lm_cfg = transformers.GPT2Config(vocab_size=tok.vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=tok.eos_id, eos_token_id=tok.eos_id)
    lm = randomize(transformers.GPT2LMHeadModel(lm_cfg), seed=3, scale=1.0)
    lm.save_pretrained(root / "lm")
    return backbone, root / "lm"


def sca_config(tiny_world, sca_parts, out_dir, lsj=(0.5, 1.5), recognition_prob=0.5, lr=3e-3, **overrides):
    backbone, lm = sca_parts
    cfg = tiny_train_config(tiny_world, out_dir, stage="sca", **overrides)
    cfg["model"] = {}
    cfg["data"] = {"vg": str(tiny_world.vg), "image_root": str(tiny_world.sa1b), "detection": str(tiny_world.coco),
                   "detection_root": str(tiny_world.sa1b), "prompts_per_image": 3}
    cfg["sca"] = {"backbone": str(backbone), "language_model": str(lm), "tokenizer": str(tiny_world.tokenizer),
                  "mixer": {"depth": 1, "num_caption_tokens": 4, "num_heads": 2, "mlp_dim": 64},
                  "lsj": lsj, "recognition_prob": recognition_prob}
    cfg["optim"] = {"lr": lr, "warmup_steps": 1}
    return config_from_dict(cfg)


def test_sca_batches_mix_captions_and_recognition_and_depend_only_on_the_step(tiny_world, sca_parts, tmp_path):
    cfg = sca_config(tiny_world, sca_parts, tmp_path)
    stage = stage_for(cfg)
    model = stage.build_model(cfg)
    info = Runtime(0, 1, 0, torch.device("cpu"))
    a, b = stage.batches(cfg, model, info), stage.batches(cfg, model, info)
    first, again = a[3], b[3]
    assert torch.equal(first.ids, again.ids) and torch.equal(first.boxes, again.boxes)
    tasks = torch.cat([a[s].task for s in range(8)])
    assert set(tasks.tolist()) == {TASKS.index("caption"), TASKS.index("recognition")}
    tok = model.tokenizer
    for step in range(4):
        batch = a[step]
        for ids, task in zip(batch.ids, batch.task):
            text = tok.decode([int(i) for i in ids if i >= 0])
            words = text.split()
            if TASKS[int(task)] == "recognition":
                assert len(words) == 2  # a concept name, e.g. "red circle"
            else:
                assert words[0] == "a"  # a grammar caption
        for image in batch.images:
            assert image.shape[1] == 3 and max(image.shape[2:]) <= 64


def test_sca_stage_trains_only_the_mixer_resumes_exactly_and_exports(tiny_world, sca_parts, tmp_path):
    cfg = sca_config(tiny_world, sca_parts, tmp_path / "full", steps=6)
    result = train(cfg, progress=False)
    assert result.steps == 6 and np.isfinite(result.final_loss)
    exported = tapkit.load_model(result.export, tokenizer=tiny_world.tokenizer, device="cpu")
    assert exported.family == "sca"
    fresh = stage_for(cfg).build_model(cfg)  # same seed: the weights training started from
    for name, value in exported.learned_state_dict().items():
        changed = not torch.equal(value, fresh.learned_state_dict()[name])
        assert changed == name.startswith(("mixer.", "projection.", "task_tokens.")), name
    # interrupted after 3 steps, resumed: the same weights as the uninterrupted run
    cfg2 = sca_config(tiny_world, sca_parts, tmp_path / "resumed", steps=6)
    train(cfg2, progress=False, stop_after=3)
    resumed = train(cfg2, progress=False)
    again = tapkit.load_model(resumed.export, tokenizer=tiny_world.tokenizer, device="cpu")
    for name, value in exported.trainable_state_dict().items():
        torch.testing.assert_close(again.trainable_state_dict()[name], value, rtol=0, atol=0)
    predictor = tapkit.Predictor(exported)
    predictor.set_image(np.zeros((64, 64, 3), np.uint8))
    assert isinstance(predictor.predict([tapkit.Prompt(box=(5, 5, 40, 40))])[0].caption, str)


def test_sca_training_lowers_the_loss(tiny_world, sca_parts, tmp_path):
    cfg = sca_config(tiny_world, sca_parts, tmp_path, lsj=None, recognition_prob=0.0, lr=1e-2, steps=30, **{"log_every": 1})
    result = train(cfg, progress=False)
    import json

    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses
    assert result.skipped_images == 0
