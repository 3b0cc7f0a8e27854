"""Tiny SAN pieces for tests: a random tiny CLIP folder, a SAN training config on it and
a tiny synthetic semantic-segmentation world."""

from __future__ import annotations

from pathlib import Path

from tapkit.data.synth_semseg import UNSEEN, write_semseg_world


def tiny_semseg(root: Path, images: int = 6, hide_unseen: bool = True, size: int = 64) -> Path:
    write_semseg_world(root, images, seed=0, hide_unseen=hide_unseen, size=size, progress=False)
    return root


def san_config(clip_folder: Path, semseg: Path, out_dir: Path, **overrides) -> dict:
    cfg = {"stage": "san", "out_dir": str(out_dir), "steps": 3, "batch_images": 2, "log_every": 1, "ckpt_every": 2,
           "data": {"semseg": str(semseg)},
           "san": {"clip": str(clip_folder), "exclude_classes": list(UNSEEN),
                   "side": {"image_size": 64, "patch_size": 16, "width": 32, "layers": 3, "heads": 2, "num_queries": 6},
                   "fusion": [[0, 0], [1, 1], [2, 2]], "recognition_start": 3, "deep_supervision": [2, 3],
                   "decoder_width": 16, "crop": 64,
                   "criterion": {"num_points": 256}},
           "optim": {"lr": 1e-3, "warmup_steps": 1}}
    cfg.update(overrides)
    return cfg


def tiny_san_folder(root: Path, seed: int = 0, pat=None) -> Path:
    """A random tiny SAN on a random tiny CLIP, saved as tapkit saves one (model.safetensors
    with its SanConfig + the CLIP's vocab.json / merges.txt): what load_segmenter reads.
    `pat`: a PatConfig makes it a PAT."""
    import torch

    import tapkit
    from tapkit.checkpoint.io import save_safetensors
    from tapkit.models.san.config import SanConfig, SideConfig
    from tapkit.models.san.model import SanModel
    from tapkit.testing import make_tiny_clip

    clip_files = make_tiny_clip(root / "clip", seed=seed)
    clip = tapkit.load_clip(clip_files.folder).model
    torch.manual_seed(seed)
    cfg = SanConfig(clip=clip.cfg, side=SideConfig(64, 16, 32, 3, 2, 2.0, 6), fusion=((0, 0), (1, 1), (2, 2)),
                    recognition_start=3, deep_supervision=(2, 3), decoder_width=16, templates="synthetic", pat=pat)
    model = SanModel(cfg, clip)
    folder = root / "san"
    folder.mkdir(parents=True)
    save_safetensors(model.state_dict(), folder / "model.safetensors", config=cfg.to_dict())
    for name in ("vocab.json", "merges.txt"):
        (folder / name).write_bytes((clip_files.folder / name).read_bytes())
    return folder
