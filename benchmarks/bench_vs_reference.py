"""tapkit against the official implementations, side by side in one process.

    PYTHONPATH=src python benchmarks/bench_vs_reference.py --reference /tmp/ref

`--reference` is a folder holding local checkouts of github.com/baaivision/tokenize-anything
(TAP) and/or github.com/facebookresearch/segment-anything (SAM and its automatic mask
generator), e.g. /tmp/ref/tokenize-anything and /tmp/ref/segment-anything. Their code is
imported from there at run time and is never part of tapkit. segment-anything imports
torchvision for two box functions (batched_nms, box_area) and two PIL helpers (resize,
to_pil_image); torchvision is not a tapkit dependency, so this script provides stand-ins
for those four at run time: tapkit's own NMS (used by both sides in automatic mode) and
PIL's bilinear resize (what torchvision does for a PIL image). tokenize-anything's package
`__init__` imports a generated `version` module and OpenCV (for a training-time helper),
which stand-ins provide too.

Both sides get the same random weights (the reference model is built and randomized, its
state dict saved in the official format, and tapkit loads that file), the same image and
the same prompts, on one thread. Each measurement alternates reference and tapkit (order
flipped every round) and reports medians and the ratio reference / tapkit (> 1: tapkit is
faster). Captions are off on both sides (the reference's timings here include none).

Outputs are compared too: max abs difference of the image embeddings, mask pixels that
differ, score differences, and (automatic mode) whether both keep the same masks.

Automatic mode with random weights: a random SAM gives nearly the same mask for every grid
point, with stability scores below 0.2 and predicted IoUs between about -0.5 and 1.35
(the weights this script draws), so SAM's defaults (IoU 0.88, stability 0.95, box NMS 0.7)
keep 0 or 1 mask. The defaults below (IoU > 1.25, stability >= 0.08, NMS off at 1.0) pass
about a quarter of the candidates through each filter and keep dozens of masks, the
workload of a trained model on a real photo; both sides must keep the same masks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_results, machine, markdown_table  # noqa: E402

import tapkit  # noqa: E402
from tapkit.everything import EverythingConfig, EverythingGenerator  # noqa: E402
from tapkit.everything.filters import box_area, nms  # noqa: E402
from tapkit.predictor.predictor import ImageEmbedding  # noqa: E402
from tapkit.testing import randomize  # noqa: E402


# --- the reference code, imported from the user's checkout ---------------------------


def _find(root: Path, package: str) -> Path | None:
    for candidate in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        if (candidate / package / "__init__.py").is_file():
            return candidate
    return None


def import_tokenize_anything(root: Path):
    folder = _find(root, "tokenize_anything")
    if folder is None:
        return None
    version = types.ModuleType("tokenize_anything.version")
    version.__version__ = (folder / "version.txt").read_text().strip() if (folder / "version.txt").is_file() else "0"
    sys.modules.setdefault("tokenize_anything.version", version)
    # Its layers/utils.py imports OpenCV for a weight-resizing helper inference never calls.
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))
    sys.path.insert(0, str(folder))
    import tokenize_anything

    return tokenize_anything


def _batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision's batched_nms: NMS per category, via offsetting boxes by category."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def _resize(image: Image.Image, size) -> Image.Image:
    h, w = size
    return image.resize((w, h), Image.BILINEAR)


def install_torchvision_stand_ins() -> None:
    torchvision = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    boxes.batched_nms, boxes.box_area = _batched_nms, box_area
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.resize, functional.to_pil_image = _resize, Image.fromarray
    torchvision.ops, ops.boxes, torchvision.transforms, transforms.functional = ops, boxes, transforms, functional
    for name, module in (("torchvision", torchvision), ("torchvision.ops", ops), ("torchvision.ops.boxes", boxes),
                         ("torchvision.transforms", transforms), ("torchvision.transforms.functional", functional)):
        sys.modules.setdefault(name, module)


def import_segment_anything(root: Path):
    folder = _find(root, "segment_anything")
    if folder is None:
        return None
    install_torchvision_stand_ins()
    sys.path.insert(0, str(folder))
    import segment_anything

    return segment_anything


# --- timing ----------------------------------------------------------------------------


class Timing:
    """Medians of wall and CPU seconds of both sides. On one thread the CPU time of the
    calling thread (user + system, page faults included) measures the work itself; the
    wall time also holds waiting for a core, which on a shared machine can be most of it."""

    def __init__(self, ref_wall: list[float], our_wall: list[float], ref_cpu: list[float], our_cpu: list[float]):
        self.ref_wall, self.our_wall = statistics.median(ref_wall), statistics.median(our_wall)
        self.ref_cpu, self.our_cpu = statistics.median(ref_cpu), statistics.median(our_cpu)
        self.pairwise = [a / b for a, b in zip(ref_wall, our_wall)]


def alternate(reference, ours, rounds: int) -> Timing:
    """`rounds` timings of each, alternating (order flipped every round), after a warm-up."""
    reference(), ours()
    wall: dict[int, list[float]] = {0: [], 1: []}
    cpu: dict[int, list[float]] = {0: [], 1: []}
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for side in order:
            start, start_cpu = time.perf_counter(), time.thread_time()
            (reference, ours)[side]()
            cpu[side].append(time.thread_time() - start_cpu)
            wall[side].append(time.perf_counter() - start)
    return Timing(wall[0], wall[1], cpu[0], cpu[1])


def test_image(height: int, width: int) -> np.ndarray:
    """A smooth random picture with a few flat shapes (deterministic)."""
    rng = np.random.default_rng(0)
    small = (rng.random((height // 32, width // 32, 3)) * 255).astype(np.uint8)
    rgb = np.array(Image.fromarray(small).resize((width, height), Image.BILINEAR))
    rgb[height // 5 : height // 2, width // 6 : width // 2] = (200, 40, 40)
    rgb[height // 2 : 4 * height // 5, width // 2 : 5 * width // 6] = (40, 180, 60)
    return rgb


def grid_boxes(n: int, height: int, width: int) -> np.ndarray:
    """n boxes (x0, y0, x1, y1) of varied sizes spread over the image (deterministic)."""
    rng = np.random.default_rng(1)
    x0 = rng.uniform(0, 0.7, n) * width
    y0 = rng.uniform(0, 0.7, n) * height
    x1 = np.minimum(x0 + rng.uniform(0.1, 0.5, n) * width, width - 1)
    y1 = np.minimum(y0 + rng.uniform(0.1, 0.5, n) * height, height - 1)
    return np.stack([x0, y0, x1, y1], 1).round().astype(np.float32)


def relative_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


class Report:
    def __init__(self):
        self.rows: list[list[str]] = []

    def add(self, family: str, what: str, t: Timing, agreement: str) -> None:
        wall, cpu = t.ref_wall / t.our_wall, t.ref_cpu / t.our_cpu
        pairwise = ", ".join(f"{p:.2f}" for p in t.pairwise)
        self.rows.append([family, what, f"{t.ref_cpu:.2f} / {t.our_cpu:.2f}", f"**{cpu:.2f}**",
                          f"{t.ref_wall:.2f} / {t.our_wall:.2f}", f"{wall:.2f} ({pairwise})", agreement])
        print(f"{family:4s} {what:44s} CPU s {t.ref_cpu:8.2f} / {t.our_cpu:8.2f} ratio {cpu:5.2f} | wall s {t.ref_wall:8.2f} / "
              f"{t.our_wall:8.2f} ratio {wall:5.2f} (pairwise {pairwise})  {agreement}", flush=True)


# --- TAP ---------------------------------------------------------------------------------


def bench_tap(ta, args, report: Report, workdir: Path) -> None:
    import pickle

    from tapkit.models.tap.protocol import preprocess

    ref = ta.model_registry[args.tap_preset](checkpoint=None, device=0, dtype="float32", image_size=args.tap_image_size).eval()
    randomize(ref, seed=0, scale=0.5)
    concept_weights = torch.randn((1024, args.concepts), generator=torch.Generator().manual_seed(2)).numpy()
    names = [f"c{i}" for i in range(concept_weights.shape[1])]
    concepts = workdir / "concepts.pkl"
    concepts.write_bytes(pickle.dumps([concept_weights.astype(np.float32), names]))
    ref.concept_projector.reset_weights(str(concepts))
    checkpoint = workdir / "tap.pkl"
    checkpoint.write_bytes(pickle.dumps({k: v.detach().cpu().numpy() for k, v in ref.state_dict().items()}))
    ours = tapkit.load_model(checkpoint, concepts=concepts, device="cpu")

    rgb = test_image(args.height, args.width)
    padded, info = preprocess(rgb, ours.image_size)
    batch = padded[None]

    with torch.inference_mode():
        def ref_encode():
            inputs = ref.get_inputs({"img": batch})
            inputs.update(ref.get_features(inputs))
            return inputs

        def our_encode():
            return ours.encode_image(torch.from_numpy(batch))

        ref_inputs, our_embed = ref_encode(), our_encode()
        diff = relative_diff(ref_inputs["features"][0], our_embed)
        if "encode" in args.parts:
            report.add("TAP", f"encode {args.width}x{args.height} image", alternate(ref_encode, our_encode, args.rounds),
                       f"embedding max abs diff / max abs {diff:.1e}")

        if "decode" in args.parts:
            boxes = grid_boxes(args.boxes, args.height, args.width)
            scale = np.float32(info.scale)
            points = np.zeros((len(boxes), 2, 3), np.float32)
            points[:, 0, :2], points[:, 1, :2] = boxes[:, :2] * scale, boxes[:, 2:] * scale
            points[:, 0, 2], points[:, 1, 2] = 2, 3
            size_in, original = info.resized_size, (args.height, args.width)

            def ref_decode():
                inputs = dict(ref_inputs, points=points.copy())
                outputs = ref.get_outputs(inputs)
                iou, mask_pred = outputs["iou_pred"], outputs["mask_pred"]
                iou[:, 1:] -= 1000.0
                index = torch.arange(iou.shape[0]), iou.argmax(1)
                masks = ref.upscale_masks(mask_pred[index][:, None], batch.shape[1:-1])
                masks = masks[..., : size_in[0], : size_in[1]]
                masks = ref.upscale_masks(masks, original).gt(0).cpu().numpy()
                concepts, scores = ref.predict_concept(outputs["sem_embeds"][index])
                return masks[:, 0], iou[index].numpy(), concepts

            predictor = tapkit.Predictor(ours, max_batch=args.boxes)
            predictor.set_embedding(ImageEmbedding(our_embed, info))
            prompts = [tapkit.Prompt(box=tuple(float(v) for v in b)) for b in boxes]

            def our_decode():
                return predictor.predict(prompts, top_k=1, captions=False, embeddings=False)

            ref_masks, ref_scores, ref_concepts = ref_decode()
            regions = our_decode()
            flipped = sum(int((r.mask != m).sum()) for r, m in zip(regions, ref_masks))
            score_diff = max(abs(r.score - float(s)) for r, s in zip(regions, ref_scores))
            same_concepts = sum(r.concept == str(c) for r, c in zip(regions, np.asarray(ref_concepts).reshape(-1)))
            report.add("TAP", f"decode {args.boxes} boxes (masks + concepts)", alternate(ref_decode, our_decode, args.rounds),
                       f"{flipped} of {ref_masks.size} mask pixels differ; IoU max diff {score_diff:.1e}; "
                       f"{same_concepts}/{len(regions)} concepts equal")


# --- SAM ---------------------------------------------------------------------------------


def bench_sam(sa, args, report: Report, workdir: Path) -> None:
    from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry

    ref = sam_model_registry[args.sam_preset](checkpoint=None).eval()
    randomize(ref, seed=0, scale=0.5)
    checkpoint = workdir / "sam.pth"
    torch.save(ref.state_dict(), checkpoint)
    ours = tapkit.load_model(checkpoint, device="cpu")
    rgb = test_image(args.height, args.width)
    ref_predictor, our_predictor = SamPredictor(ref), tapkit.Predictor(ours, max_batch=args.boxes)

    with torch.inference_mode():
        def ref_encode():
            ref_predictor.set_image(rgb)

        def our_encode():
            return our_predictor.set_image(rgb)

        ref_encode(), our_encode()
        diff = relative_diff(ref_predictor.features, our_predictor.image.embedding)
        if "encode" in args.parts:
            report.add("SAM", f"set_image {args.width}x{args.height} (resize + encode)", alternate(ref_encode, our_encode, args.rounds),
                       f"embedding max abs diff / max abs {diff:.1e}")

        if "decode" in args.parts:
            boxes = grid_boxes(args.boxes, args.height, args.width)
            transformed = ref_predictor.transform.apply_boxes_torch(torch.from_numpy(boxes), rgb.shape[:2])

            def ref_decode():
                masks, scores, _ = ref_predictor.predict_torch(None, None, boxes=transformed, multimask_output=False)
                return masks[:, 0].numpy(), scores[:, 0].numpy()

            prompts = [tapkit.Prompt(box=tuple(float(v) for v in b)) for b in boxes]

            def our_decode():
                return our_predictor.predict(prompts, top_k=0, captions=False, embeddings=False)

            ref_masks, ref_scores = ref_decode()
            regions = our_decode()
            flipped = sum(int((r.mask != m).sum()) for r, m in zip(regions, ref_masks))
            score_diff = max(abs(r.score - float(s)) for r, s in zip(regions, ref_scores))
            report.add("SAM", f"decode {args.boxes} boxes (masks)", alternate(ref_decode, our_decode, args.rounds),
                       f"{flipped} of {ref_masks.size} mask pixels differ; IoU max diff {score_diff:.1e}")

        if "automatic" in args.parts:
            settings = dict(points_per_side=args.points_per_side, points_per_batch=64, pred_iou_thresh=args.pred_iou_thresh,
                            stability_score_thresh=args.stability_thresh, box_nms_thresh=args.box_nms_thresh)
            generator = SamAutomaticMaskGenerator(ref, output_mode="binary_mask", **settings)
            config = EverythingConfig(points_per_side=args.points_per_side, points_per_batch=64, pred_iou_thresh=args.pred_iou_thresh,
                                      stability_thresh=args.stability_thresh, box_nms_thresh=args.box_nms_thresh,
                                      top_k=0, captions=False)
            ours_everything = EverythingGenerator(ours, config)

            def ref_auto():
                return generator.generate(rgb)

            def our_auto():
                return ours_everything.generate(rgb)

            ref_out, our_out = ref_auto(), our_auto()
            ref_set = {m["segmentation"].tobytes() for m in ref_out}
            our_set = {r.mask.tobytes() for r in our_out.regions}
            same = len(ref_set & our_set)
            report.add("SAM", f"automatic {args.points_per_side}x{args.points_per_side} grid (incl. encode)",
                       alternate(ref_auto, our_auto, args.rounds),
                       f"kept {len(ref_out)} (reference) / {len(our_out.regions)} (tapkit), {same} identical masks")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", required=True, type=Path, help="folder with tokenize-anything and/or segment-anything checkouts")
    p.add_argument("--families", default="tap,sam", help="comma-separated: tap, sam (default: both)")
    p.add_argument("--parts", default="encode,decode,automatic", help="comma-separated: encode, decode, automatic (SAM only)")
    p.add_argument("--tap-preset", default="tap_vit_b")
    p.add_argument("--tap-image-size", type=int, default=1024, help="TAP encoder input size (SAM's is fixed at 1024)")
    p.add_argument("--sam-preset", default="vit_b", help="segment-anything registry name (vit_b, vit_l, vit_h)")
    p.add_argument("--rounds", type=int, default=3, help="timed runs of each side (alternating), after one warm-up")
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--boxes", type=int, default=64, help="box prompts decoded in one call")
    p.add_argument("--concepts", type=int, default=2560, help="size of the random concept vocabulary (TAP)")
    p.add_argument("--points-per-side", type=int, default=16, help="automatic mode grid")
    p.add_argument("--pred-iou-thresh", type=float, default=1.25)
    p.add_argument("--stability-thresh", type=float, default=0.08)
    p.add_argument("--box-nms-thresh", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    args.parts = set(args.parts.split(","))
    families = set(args.families.split(","))
    torch.set_num_threads(args.threads)
    if not args.reference.is_dir():
        print(f"error: --reference {args.reference} is not a folder", file=sys.stderr)
        return 2
    report = Report()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        if "tap" in families:
            ta = import_tokenize_anything(args.reference)
            if ta is None:
                print(f"error: no tokenize_anything package under {args.reference}", file=sys.stderr)
                return 2
            bench_tap(ta, args, report, Path(tmp))
        if "sam" in families:
            sa = import_segment_anything(args.reference)
            if sa is None:
                print(f"error: no segment_anything package under {args.reference}", file=sys.stderr)
                return 2
            bench_sam(sa, args, report, Path(tmp))
    header = ["family", "what", "CPU s (reference / tapkit)", "ratio (CPU)", "wall s (reference / tapkit)", "ratio (wall; pairwise)", "outputs"]
    table = markdown_table(header, report.rows)
    print("\n" + table)
    if args.append:
        command = "PYTHONPATH=src python benchmarks/bench_vs_reference.py " + " ".join(argv if argv is not None else sys.argv[1:])
        settings = (f"- machine: {machine(torch.device('cpu'))}; load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end\n"
                    f"- command: `{command}`\n"
                    f"- random weights shared by both sides; medians of {args.rounds} alternating runs after a warm-up; "
                    "ratio = reference / tapkit (> 1: tapkit faster); CPU = the thread's user + system time")
        append_results("bench_vs_reference", settings, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
