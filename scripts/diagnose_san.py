"""Where a SAN's errors come from, on a synthetic semantic-segmentation split:

(a) masks, class-agnostically: for every ground-truth segment (one class in one image),
    the IoU of the query mask that fits it best (sigmoid > 0.5 at full resolution);
(b) recognition by the frozen CLIP with the GT mask as the attention bias of the last
    blocks (what the CLIP alone can name: shape and colour right);
(c) the SAN's own naming: the class of the best-fitting query.
Seen and unseen classes are reported apart.

    python scripts/diagnose_san.py --checkpoint runs/san_synthetic/model.safetensors \\
        --tokenizer src/tapkit/assets/clip --root scratch/semseg_eval --images 100
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from torch.nn import functional as F

import tapkit
from tapkit.data.semseg import open_dataset, read_label_map
from tapkit.inputs.image import read_image
from tapkit.models.san.recognition import clip_features, recognize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="SAN weights or folder (default: the packaged SAN)")
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--root", required=True, help="a synthetic split (tapkit data synth-semseg --split eval)")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--output", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seg = tapkit.load_segmenter(args.checkpoint, tokenizer=args.tokenizer)
    ds = open_dataset("synthetic", args.root)
    classes, unseen = ds.classes, set(ds.unseen)
    classifier = seg.classifier(classes)
    model, visual = seg.model, seg.model.clip.visual
    rows = []
    for image_path, label_path in ds.samples[: args.images]:
        rgb, gt = read_image(image_path), read_label_map(label_path)
        x, (nh, nw) = seg.preprocess(rgb)
        with torch.inference_mode():
            out = model(x, classifier, aux=False)
            masks = F.interpolate(out.mask_logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
            masks = F.interpolate(masks[:, :, :nh, :nw], size=gt.shape, mode="bilinear", align_corners=False)[0] > 0
            query_class = out.class_logits[0].argmax(-1)
            clip_in = model.clip_input(x)
            feats = clip_features(visual, clip_in, set(), model.cfg.recognition_start, model.cfg.clip_pos_antialias)
        present = [int(c) for c in np.unique(gt) if c != ds.ignore_label]
        gt_masks = torch.from_numpy(np.stack([gt == c for c in present]))
        inter = (masks[:, None] & gt_masks[None]).flatten(2).sum(-1).float()
        union = (masks[:, None] | gt_masks[None]).flatten(2).sum(-1).float()
        iou = inter / union.clamp(min=1)
        best_iou, best_q = iou.max(0)
        # (b): the GT mask on the CLIP grid as the bias (0 on patches it covers >= 30 %)
        padded = F.pad(gt_masks.float(), (0, x.shape[-1] - gt.shape[1], 0, x.shape[-2] - gt.shape[0]))
        frac = F.adaptive_avg_pool2d(padded[None], feats.grid)[0]
        keep = (frac >= 0.3) | (frac == frac.flatten(1).max(1).values[:, None, None])
        bias = torch.where(keep, 0.0, -100.0)[None, None].expand(1, visual.heads, -1, -1, -1)
        with torch.inference_mode():
            emb = recognize(visual, model.cfg.recognition_start, feats, bias)[0]
        clip_pred = (emb @ classifier[:-1].t()).argmax(-1)
        for k, c in enumerate(present):
            name = classes[c]
            rows.append({"class": name, "unseen": name in unseen, "best_iou": float(best_iou[k]),
                         "clip_name": classes[int(clip_pred[k])], "san_name": classes[int(query_class[best_q[k]])]
                         if int(query_class[best_q[k]]) < len(classes) else "(no object)"})
    report = {}
    for subset, keep in (("seen", lambda r: not r["unseen"]), ("unseen", lambda r: r["unseen"]),
                         ("shapes (not background)", lambda r: r["class"] != "background")):
        rs = [r for r in rows if keep(r)]
        if not rs:
            continue
        named = [r for r in rs if r["class"] != "background"]
        report[subset] = {
            "segments": len(rs),
            "mask_best_iou": round(float(np.mean([r["best_iou"] for r in rs])), 3),
            "clip_gt_mask_top1": round(float(np.mean([r["clip_name"] == r["class"] for r in rs])), 3),
            "clip_gt_mask_shape": round(float(np.mean([r["clip_name"].split()[-1] == r["class"].split()[-1] for r in named])), 3) if named else None,
            "clip_gt_mask_colour": round(float(np.mean([r["clip_name"].split()[0] == r["class"].split()[0] for r in named])), 3) if named else None,
            "san_best_query_top1": round(float(np.mean([r["san_name"] == r["class"] for r in rs])), 3),
        }
    print(json.dumps(report, indent=1))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
