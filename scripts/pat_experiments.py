"""SAN vs PAT on the synthetic world, 3 seeds each, and PAT's ablations (docs/pat.md).

Protocol: every run starts from one trained SAN (`--base`) and trains `--steps` more
steps on the same batches: `san` continues as SAN (stage san), the PAT variants add the
tokenizer to it (stage pat; its guidance starts at zero, so each PAT starts as that SAN).
Each run is scored by `tapkit eval semseg`'s code on the held-out synthetic images and on
plain PIL drawings (mIoU over the 40 seen and the 8 unseen classes, all 49 names as the
vocabulary); PAT runs are scored a second time with the guidance zeroed (the probe: is the
guidance used at all?). Trainable parameters are counted after the stage's freeze.

    python scripts/pat_experiments.py drawings --out scratch/plain_semseg --images 40
    python scripts/pat_experiments.py run --base scratch/base_san/model.safetensors \\
        --train scratch/semseg_train --heldout scratch/semseg_eval --drawings scratch/plain_semseg \\
        --out runs/pat_exp --steps 150 --seeds 0 1 2
    python scripts/pat_experiments.py timing --out runs/pat_exp --heldout scratch/semseg_eval
    python scripts/pat_experiments.py table --out runs/pat_exp

Runs resume: a finished run (result.json) is skipped, an interrupted one continues from
its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plain_drawings import BACKGROUNDS, render, write_semseg  # noqa: E402

import tapkit  # noqa: E402
from tapkit.data.semseg import open_dataset  # noqa: E402
from tapkit.data.synth import COLOURS  # noqa: E402
from tapkit.data.synth_semseg import UNSEEN, semseg_classes  # noqa: E402
from tapkit.defaults import default_clip_dir  # noqa: E402
from tapkit.evaluation.semseg import SemsegSetup, evaluate  # noqa: E402
from tapkit.runtime import runtime  # noqa: E402
from tapkit.training.config import config_from_dict  # noqa: E402
from tapkit.training.engine import train  # noqa: E402
from tapkit.training.stages import san as san_stage  # noqa: E402

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "ellipse")

# Each variant: the stage and its `pat` section (None: SAN). The PAT default is
# multi-resolution (strides 1, 2, 4), loosely coupled, with the shared decoder.
PAT_DEFAULT = {"layers": [1, 2, 3], "strides": [1, 2, 4], "coupling": "loose", "shared_decoder": True}
VARIANTS: dict[str, dict | None] = {
    "san": None,
    "pat": PAT_DEFAULT,
    "pat_single_res": {**PAT_DEFAULT, "strides": [1, 1, 1]},
    "pat_coupled": {**PAT_DEFAULT, "coupling": "coupled"},
    "pat_no_shared_decoder": {**PAT_DEFAULT, "shared_decoder": False},
    # the investigation (docs/pat.md): the guidance stays ~0.1 % of the side tokens at scale 1
    "pat_guidance_x10": {**PAT_DEFAULT, "guidance_scale": 10.0},
    # ... and PAT's losses reach CLIP's trainable positional embedding, SAN's features with it
    "pat_clip_detached": {**PAT_DEFAULT, "clip_gradient": False},
    # ... and the guidance into the mask decoder's pixel features (masks and attention biases)
    "pat_decoder": {**PAT_DEFAULT, "guidance_into": "decoder"},
}
MAIN = ("san", "pat", "pat_single_res", "pat_coupled", "pat_no_shared_decoder")


def write_drawings(out: Path, images: int, seed: int, unseen_share: float = 0.5) -> None:
    """Plain PIL drawings (scripts/plain_drawings.py's renderer and label maps) in the
    synthetic semseg layout, 2-4 shapes each, each an unseen class with probability
    `unseen_share` (plain_drawings.py alone draws them at their share of the 42 names).
    White shapes are left out (the backgrounds are white or nearly)."""
    for sub in ("images", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(semseg_classes()) + "\n")
    (out / "unseen.txt").write_text("\n".join(UNSEEN) + "\n")
    unseen = [c for c in UNSEEN if not c.startswith("white")]
    seen = [f"{c} {s}" for c in COLOURS if c != "white" for s in SHAPES if f"{c} {s}" not in UNSEEN]
    rng = np.random.default_rng(seed)
    for i in range(images):
        w, h = int(rng.integers(224, 384)), int(rng.integers(224, 384))
        items = []
        for _ in range(int(rng.integers(2, 5))):
            pool = unseen if rng.random() < unseen_share else seen
            colour, shape = pool[int(rng.integers(len(pool)))].split(" ")
            r = float(rng.uniform(0.1, 0.2) * min(w, h))
            items.append((shape, colour, float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r)), r))
        image, masks = render(items, (w, h), BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))])
        write_semseg(out, f"plain_{i:04d}", image, items, masks)


def run_config(args: argparse.Namespace, variant: str, seed: int, out_dir: Path) -> dict:
    pat = VARIANTS[variant]
    cfg = {"stage": "san" if pat is None else "pat", "out_dir": str(out_dir), "steps": args.steps,
           "batch_images": args.batch, "seed": seed, "log_every": 10, "ckpt_every": 25,
           "model": {"init_from": str(args.base)}, "data": {"semseg": str(args.train)},
           "san": {"clip": str(args.clip) if args.clip else None, "exclude_classes": list(UNSEEN), "crop": 256,
                   "criterion": {"num_points": args.points}},
           "optim": {"lr": args.lr, "warmup_steps": 10, "weight_decay": 1e-4, "grad_clip": 0.01}}
    if pat is not None:
        cfg["pat"] = pat
    return cfg


def trainable_parameters(model, cfg) -> int:
    san_stage.freeze(model, cfg)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def score(segmenter, root: Path, name: str, out: Path, limit: int | None, rt) -> dict:
    dataset = open_dataset("synthetic", root)
    report = evaluate(SemsegSetup(dataset, out / f"eval_{name}", limit, fresh=True), segmenter, {}, rt)
    m = report.metrics
    return {"mIoU_seen": m["mIoU_seen"], "mIoU_unseen": m["mIoU_unseen"], "mIoU": m["mIoU"]}


@torch.no_grad()
def guidance_ratio(segmenter, root: Path, images: int = 10) -> float:
    """Mean per-token L2 norm of PAT's guidance over that of the side-network patch tokens
    it is added to (the output of side block `guidance_at`, or of the last side block when
    the guidance enters the mask decoder's pixel features), on the first `images` images."""
    model = segmenter.model
    side = model.cfg.pat.guidance_into == "side"
    at, q = (model.cfg.pat.guidance_at if side else len(model.side.blocks)), model.cfg.side.num_queries
    assert at >= 1, "the ratio reads the output of side block guidance_at"
    seen = []
    hook = model.side.blocks[at - 1].register_forward_hook(lambda m, i, out: seen.append(out[:, q:].norm(dim=-1).mean()))
    ratios = []
    try:
        for image, _ in open_dataset("synthetic", root).samples[:images]:
            x, _ = segmenter.preprocess(np.asarray(Image.open(image).convert("RGB")))
            model(x, segmenter.classifier(["background"]), aux=False)
            guidance = model.tokenize(x).guidance
            ratios.append(float(guidance.norm(dim=1).mean() / seen[-1]))
    finally:
        hook.remove()
    return statistics.mean(ratios)


def zero_guidance(model) -> None:
    with torch.no_grad():
        model.pat.semantic.out.weight.zero_()
        model.pat.semantic.out.bias.zero_()


def last_metrics(out_dir: Path) -> dict:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


def run_one(args: argparse.Namespace, variant: str, seed: int, rt) -> dict:
    out_dir = args.out / variant / f"seed{seed}"
    done = out_dir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg = config_from_dict(run_config(args, variant, seed, out_dir))
    start = time.perf_counter()
    result = train(cfg, progress=True)
    train_seconds = time.perf_counter() - start
    tokenizer = args.clip or default_clip_dir()
    record = {"variant": variant, "seed": seed, "steps": args.steps, "train_seconds": round(train_seconds, 1),
              "trainable_params": trainable_parameters(tapkit.load_model(result.export), cfg)}
    segmenter = tapkit.load_segmenter(result.export, tokenizer=tokenizer)
    for name, root in (("heldout", args.heldout), ("drawings", args.drawings)):
        record[name] = score(segmenter, root, name, out_dir, args.limit, rt)
    if segmenter.has_tokens:
        metrics = last_metrics(out_dir)
        record["code_usage"] = [metrics[k] for k in sorted(metrics) if k.startswith("code_usage_")]
        record["code_perplexity"] = [metrics[k] for k in sorted(metrics) if k.startswith("code_perplexity_")]
        record["guidance_ratio"] = guidance_ratio(segmenter, args.heldout)
        zero_guidance(segmenter.model)
        segmenter.vocabulary = None
        for name, root in (("heldout", args.heldout), ("drawings", args.drawings)):
            record[f"{name}_guidance_zeroed"] = score(segmenter, root, f"{name}_zeroed", out_dir, args.limit, rt)
    done.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record), flush=True)
    return record


def timing(args: argparse.Namespace) -> dict:
    """Seconds per image of SAN and PAT (seed 0 of `san` and `pat`), alternating image by
    image in one process on the held-out images, all 49 names as the vocabulary."""
    tokenizer = args.clip or default_clip_dir()
    models = {v: tapkit.load_segmenter(args.out / v / "seed0" / "model.safetensors", tokenizer=tokenizer)
              for v in ("san", "pat")}
    dataset = open_dataset("synthetic", args.heldout)
    images = [np.asarray(Image.open(p).convert("RGB")) for p, _ in dataset.samples[: args.timing_images]]
    seconds = {v: [] for v in models}
    for seg in models.values():
        seg.segment(images[0], dataset.classes)  # warm-up, and the class embeddings once
    for rgb in images:
        for v, seg in models.items():
            t = time.perf_counter()
            seg.segment(rgb, dataset.classes)
            seconds[v].append(time.perf_counter() - t)
    out = {v: statistics.median(s) for v, s in seconds.items()}
    out["ratio_pat_over_san"] = out["pat"] / out["san"]
    out["images"] = len(images)
    (args.out / "timing.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return out


def _mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {sd:.1f}"


def table(args: argparse.Namespace) -> str:
    timing_file = args.out / "timing.json"
    times = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    rows = ["| model | seeds | held-out seen | held-out unseen | drawings seen | drawings unseen | "
            "unseen, guidance zeroed (held-out / drawings) | guidance / token norm | trainable params | s / image |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for variant in VARIANTS:
        records = [json.loads(p.read_text()) for p in sorted((args.out / variant).glob("seed*/result.json"))]
        if not records:
            continue
        col = lambda where, key: _mean_sd([r[where][key] for r in records])  # noqa: E731
        zeroed = (f"{col('heldout_guidance_zeroed', 'mIoU_unseen')} / {col('drawings_guidance_zeroed', 'mIoU_unseen')}"
                  if "heldout_guidance_zeroed" in records[0] else "-")
        t = f"{times[variant]:.3f}" if variant in times else "-"
        ratio = (f"{statistics.mean(r['guidance_ratio'] for r in records):.3f}" if "guidance_ratio" in records[0]
                 else "-")
        rows.append(f"| {variant} | {len(records)} | {col('heldout', 'mIoU_seen')} | {col('heldout', 'mIoU_unseen')} | "
                    f"{col('drawings', 'mIoU_seen')} | {col('drawings', 'mIoU_unseen')} | {zeroed} | {ratio} | "
                    f"{records[0]['trainable_params']:,} | {t} |")
        summary[variant] = records
    text = "\n".join(rows)
    (args.out / "table.md").write_text(text + "\n")
    (args.out / "summary.json").write_text(json.dumps({"runs": summary, "timing": times}, indent=1) + "\n")
    print(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("drawings", help="write plain PIL drawings in the synthetic semseg layout")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--images", type=int, default=40)
    d.add_argument("--seed", type=int, default=0)
    for name in ("run", "timing", "table"):
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, default=Path("runs/pat_exp"))
        p.add_argument("--heldout", type=Path, default=Path("scratch/semseg_eval"))
        p.add_argument("--clip", type=Path, help="the CLIP folder the base SAN is built on (its tokenizer; default: "
                                                 "the packaged CLIP)")
        if name == "run":
            p.add_argument("--base", type=Path, required=True, help="the trained SAN every run starts from")
            p.add_argument("--train", type=Path, default=Path("scratch/semseg_train"))
            p.add_argument("--drawings", type=Path, default=Path("scratch/plain_semseg"))
            p.add_argument("--variants", nargs="+", default=list(MAIN), choices=list(VARIANTS))
            p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
            p.add_argument("--steps", type=int, default=150)
            p.add_argument("--batch", type=int, default=4)
            p.add_argument("--lr", type=float, default=3e-4)
            p.add_argument("--points", type=int, default=4096, help="criterion points per mask")
            p.add_argument("--limit", type=int, help="score the first N images of each set")
        if name == "timing":
            p.add_argument("--timing-images", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.command == "drawings":
        write_drawings(args.out, args.images, args.seed)
    elif args.command == "run":
        with runtime("cpu") as rt:
            for seed in args.seeds:  # seed-major: a partial sweep still compares every variant
                for variant in args.variants:
                    run_one(args, variant, seed, rt)
        table(args)
    elif args.command == "timing":
        timing(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
