import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml

from tapkit.errors import UserError
from tapkit.training.config import config_from_dict, load_config
from tapkit.training.data import SegmentBatches
from tapkit.training.engine import lr_at, stage_for, train
from tapkit.training.objectives import TapObjective
from tapkit.training.stages.tap import build_model, freeze
from training_helpers import run_two_ranks, tiny_train_config


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_config_yaml_maps_onto_typed_classes(tmp_path, tiny_world):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_train_config(tiny_world, tmp_path / "out")))
    cfg = load_config(path, ["optim.lr=3e-4", "steps=7"])
    assert cfg.optim.lr == 3e-4 and cfg.steps == 7 and cfg.model.image_encoder.image_size == 64
    assert cfg.model.text_decoder.depth == 1
    bad = tiny_train_config(tiny_world, tmp_path / "out")
    bad["optim"]["learning_rate"] = 1.0
    with pytest.raises(UserError, match="learning_rate"):
        config_from_dict(bad)
    with pytest.raises(UserError, match="stage"):
        config_from_dict({"stage": "pretrain"})


def test_config_base_is_read_first_and_merged_key_by_key(tmp_path, tiny_world):
    base = tiny_train_config(tiny_world, tmp_path / "out")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    child.write_text("base: ../base.yaml\nsteps: 11\noptim: {lr: 0.002}\n")
    cfg = load_config(child, ["seed=9"])
    assert cfg.steps == 11 and cfg.seed == 9 and cfg.optim.lr == 0.002
    # Keys the child does not name come from the base, inside merged mappings too.
    assert cfg.optim.warmup_steps == config_from_dict(base).optim.warmup_steps
    assert cfg.model.image_encoder.image_size == 64 and cfg.data.sa1b == base["data"]["sa1b"]
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\nsteps: 1\n")
    with pytest.raises(UserError, match="its own base"):
        load_config(loop)
    (tmp_path / "orphan.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "orphan.yaml")


def test_lr_schedule_warmup_then_cosine(tiny_world, tmp_path):
    cfg = config_from_dict(tiny_train_config(tiny_world, tmp_path, steps=100, **{"optim.warmup_steps": 10, "optim.lr": 1.0}))
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.55, abs=0.01)
    assert lr_at(100, cfg) == pytest.approx(cfg.optim.min_lr_ratio)


def test_segment_batches_are_a_function_of_the_step(tiny_world, tmp_path):
    cfg = config_from_dict(tiny_train_config(tiny_world, tmp_path))
    model = build_model(cfg)
    from tapkit.runtime import Runtime

    info = Runtime(0, 1, 0, torch.device("cpu"))
    a, b = stage_for(cfg).batches(cfg, model, info), stage_for(cfg).batches(cfg, model, info)
    x, y, z = a[3], b[3], a[4]
    assert torch.equal(x.masks, y.masks) and x.seed == y.seed
    assert not (x.seed == z.seed and torch.equal(x.images, z.images))
    assert x.masks.shape[0] == x.image_index.shape[0] == x.concept_target.shape[0]
    assert x.has_concept.all() and torch.allclose(x.concept_target.sum(-1), torch.ones(len(x.masks)), atol=1e-3)
    assert x.masks.flatten(1).any(1).all()


def _fixed_loss(model, batch, cfg):
    objective = TapObjective(model, cfg.loss, cfg.interactive_prob)
    model.eval()
    with torch.no_grad():
        torch.manual_seed(0)
        return float(objective(batch).total)


def test_tiny_training_lowers_the_loss(tiny_world, tmp_path):
    cfg = config_from_dict(tiny_train_config(tiny_world, tmp_path / "run", steps=10, ckpt_every=100, **{"optim.lr": 3e-3}))
    from tapkit.runtime import Runtime

    model0 = build_model(cfg)
    batches = stage_for(cfg).batches(cfg, model0, Runtime(0, 1, 0, torch.device("cpu")))
    batch = batches[0]
    torch.manual_seed(cfg.seed)
    before = _fixed_loss(build_model(cfg), batch, cfg)
    result = train(cfg, progress=False)
    after = _fixed_loss(result.model, batch, cfg)
    assert after < 0.8 * before
    assert result.export.is_file()
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == list(range(1, 11))
    import tapkit

    loaded = tapkit.load_model(result.export, tokenizer=tiny_world.tokenizer, concepts=tiny_world.concepts, device="cpu")
    trained = result.model.learned_state_dict()
    for k, v in loaded.learned_state_dict().items():
        assert torch.equal(v, trained[k].cpu()), k


def test_resume_equals_uninterrupted_training(tiny_world, tmp_path):
    base = tiny_train_config(tiny_world, tmp_path / "a", steps=6, ckpt_every=100)
    full = train(config_from_dict(base), progress=False)
    resumed_cfg = config_from_dict({**base, "out_dir": str(tmp_path / "b")})
    first = train(resumed_cfg, progress=False, stop_after=3)
    assert first.steps == 3 and first.export is None
    second = train(resumed_cfg, progress=False)
    assert second.steps == 6
    a, b = _weights(full.model), _weights(second.model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not all(torch.equal(a[k], _weights(first.model)[k]) for k in a)  # steps 4-6 changed something


def test_caption_stage_trains_only_the_text_decoder_when_frozen(tiny_world, tmp_path):
    seg = train(config_from_dict(tiny_train_config(tiny_world, tmp_path / "seg", steps=2)), progress=False)
    cfg = tiny_train_config(tiny_world, tmp_path / "cap", stage="caption", steps=12, ckpt_every=100,
                            freeze=["image_encoder", "prompt_encoder", "image_decoder"],
                            **{"optim.lr": 3e-3, "model.init_from": str(seg.export)})
    before = seg.model.learned_state_dict()
    result = train(config_from_dict(cfg), progress=False)
    after = result.model.learned_state_dict()
    changed = {k.split(".")[0] for k in after if not torch.equal(after[k], before[k])}
    assert changed == {"text_decoder"}
    assert result.final_loss < result.first_loss


def test_segment_stage_freezes_the_text_decoder(tiny_world, tmp_path):
    cfg = config_from_dict(tiny_train_config(tiny_world, tmp_path))
    model = build_model(cfg)
    freeze(model, cfg)
    assert not any(p.requires_grad for p in model.text_decoder.parameters())
    assert all(p.requires_grad for p in model.image_encoder.parameters())


DDP_WORKER = textwrap.dedent("""
    import os, sys, torch
    from tapkit.training.config import load_config
    from tapkit.training.engine import train
    result = train(load_config(sys.argv[1]), progress=False)
    rank = int(os.environ["RANK"])
    params = {k: v.detach() for k, v in result.model.named_parameters()}
    torch.save(params, os.path.join(sys.argv[2], f"rank{rank}.pt"))
""")


def test_two_process_gloo_ddp_ends_with_identical_weights(tiny_world, tmp_path):
    a, b = run_two_ranks(DDP_WORKER, tiny_train_config(tiny_world, tmp_path / "run", steps=3, ckpt_every=100), tmp_path)
    assert len(a) > 50
    for k in a:  # parameters; batch-norm buffers are broadcast from rank 0 at each forward
        assert torch.equal(a[k], b[k]), k
    # the ranks saw different images, so equality comes from the gradient all-reduce
    cfg = load_config(tmp_path / "ddp.yaml")
    from tapkit.runtime import Runtime

    model = build_model(cfg)
    r0 = stage_for(cfg).batches(cfg, model, Runtime(0, 2, 0, torch.device("cpu")))[0]
    r1 = stage_for(cfg).batches(cfg, model, Runtime(1, 2, 0, torch.device("cpu")))[0]
    assert not torch.equal(r0.images, r1.images)
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


FSDP_WORKER = textwrap.dedent("""
    import json, os, sys
    from tapkit.training.config import load_config
    from tapkit.training.engine import train
    stop = int(sys.argv[3]) if len(sys.argv) > 3 else None
    result = train(load_config(sys.argv[1]), progress=False, stop_after=stop)
    with open(os.path.join(sys.argv[2], f"fsdp_rank{os.environ['RANK']}.json"), "w") as f:
        json.dump({"steps": result.steps, "loss": result.final_loss}, f)
""")


def test_two_process_fsdp_trains_resumes_and_exports(tiny_world, tmp_path):
    import os

    import tapkit

    config = tmp_path / "fsdp.yaml"
    config.write_text(yaml.safe_dump(tiny_train_config(tiny_world, tmp_path / "run", steps=4, ckpt_every=100,
                                                       distributed="fsdp")))
    worker = tmp_path / "worker.py"
    worker.write_text(FSDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
              str(config), str(tmp_path)]
    subprocess.run(launch + ["2"], check=True, env=env, timeout=240, capture_output=True)
    assert not (tmp_path / "run" / "model.safetensors").exists()
    subprocess.run(launch, check=True, env=env, timeout=240, capture_output=True)
    ranks = [json.loads((tmp_path / f"fsdp_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0]["steps"] == 4  # resumed at 2, loss averaged over ranks
    model = tapkit.load_model(tmp_path / "run" / "model.safetensors", device="cpu")
    fresh = build_model(load_config(config)).learned_state_dict()
    assert any(not torch.equal(v, fresh[k]) for k, v in model.learned_state_dict().items())
