"""Resuming through `tapkit train` (issue 14 items 5, 10): it says what it resumes, refuses
a changed config unless --allow-config-change, and always refuses another architecture."""

from __future__ import annotations

import yaml

from tapkit.cli.main import main
from training_helpers import tiny_train_config


def _config(tmp_path, tiny_world, **overrides):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_train_config(tiny_world, tmp_path / "run", steps=2, ckpt_every=1, **overrides)))
    return str(path)


def _train(capsys, *argv):
    code = main(["train", *argv, "--no-progress"])
    return code, capsys.readouterr().err


def test_resume_reports_refuses_changes_and_accepts_them_when_asked(tiny_world, tmp_path, capsys, one_torch_thread):
    config = _config(tmp_path, tiny_world)
    code, err = _train(capsys, config, "--set", "steps=1")
    assert code == 0 and "resuming" not in err
    # a changed learning rate (and the longer run asked for) is refused, in one line
    code, err = _train(capsys, config, "--set", "optim.lr=0.01")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "optim.lr: 0.002 -> 0.01" in err and "steps: 1 -> 2" in err and "--allow-config-change" in err
    # logging and checkpoint frequency may change freely
    code, err = _train(capsys, config, "--set", "steps=1", "--set", "log_every=5")
    assert code == 0 and f"resuming {tmp_path / 'run'} at step 1 of 1" in err, err
    code, err = _train(capsys, config, "--allow-config-change")
    assert code == 0, err
    assert f"resuming {tmp_path / 'run'} at step 1 of 2" in err and "resuming with a changed config: steps: 1 -> 2" in err


def test_resume_with_another_architecture_is_refused_even_when_asked(tiny_world, tmp_path, capsys, one_torch_thread):
    config = _config(tmp_path, tiny_world)
    assert _train(capsys, config, "--set", "steps=1")[0] == 0
    for extra in ([], ["--allow-config-change"]):
        code, err = _train(capsys, config, "--set", "steps=1", "--set", "model.image_encoder.depth=8", *extra)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "another architecture" in err and "image_encoder.depth: 4 -> 8" in err
    assert (tmp_path / "run" / "checkpoint.pt").is_file()  # the run that was there is kept


def test_stop_after_ends_the_run_at_a_checkpoint_and_resuming_finishes_it(tiny_world, tmp_path, capsys, one_torch_thread):
    import json

    from tapkit.training.checkpoint import load_train_state

    config = _config(tmp_path, tiny_world)
    code, err = _train(capsys, config, "--stop-after", "1")
    assert code == 0, err
    assert load_train_state(tmp_path / "run").step == 1 and not (tmp_path / "run" / "model.safetensors").exists()
    code, err = _train(capsys, config)
    assert code == 0 and "at step 1 of 2" in err, err
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert _train(capsys, config, "--stop-after", "0")[0] == 2
