"""`tapkit convert` keeps the dtype unless --dtype says otherwise, and every .safetensors it
or training writes has the permissions of any new file (issue 14 item 11)."""

from __future__ import annotations

import os

import pytest
from safetensors import safe_open

from tapkit.checkpoint.io import save_safetensors
from tapkit.cli.main import main


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _dtypes(path) -> set[str]:
    with safe_open(str(path), framework="pt") as f:
        return {str(f.get_tensor(k).dtype) for k in f.keys()}


@pytest.fixture
def half_model(tiny_model, tmp_path):
    path = tmp_path / "half.safetensors"
    save_safetensors({k: v.half() for k, v in tiny_model.learned_state_dict().items()}, path, config=tiny_model.cfg.to_dict())
    return path


def test_convert_keeps_float16_and_changes_it_only_when_asked(half_model, tmp_path, capsys):
    kept, wide = tmp_path / "kept.safetensors", tmp_path / "wide.safetensors"
    assert main(["convert", str(half_model), str(kept)]) == 0
    assert _dtypes(kept) == {"torch.float16"} and "float16" in capsys.readouterr().out
    assert main(["convert", str(half_model), str(wide), "--dtype", "float32"]) == 0
    assert _dtypes(wide) == {"torch.float32"}
    assert main(["convert", str(half_model), str(tmp_path / "b.pkl"), "--dtype", "bfloat16"]) == 2
    assert "no bfloat16" in capsys.readouterr().err


def test_safetensors_outputs_follow_the_umask(tiny_files, tmp_path):
    out = tmp_path / "m.safetensors"
    assert main(["convert", str(tiny_files.checkpoint), str(out)]) == 0
    assert out.stat().st_mode & 0o777 == _umask_mode()
    direct = tmp_path / "direct.safetensors"
    save_safetensors({}, direct)  # what training's export calls
    assert direct.stat().st_mode & 0o777 == _umask_mode()
