"""How well a CLIP names a region when SAN's recognition sees it: the whole image at
`--sizes` px, copies of the class token entering block `--starts` run through the last
blocks with the region's ground-truth mask as the attention bias, against the 48 names'
text embeddings (the three photo templates). Prints top-1, shape right and colour right.

    python scripts/clip_region_naming.py --clip src/tapkit/assets/clip --sa1b scratch/world_eval/sa1b \\
        --images 60 --sizes 64,128,192,256 --starts 1,3,5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

import tapkit
from tapkit.data.synth import concept_names
from tapkit.data.text_encoders import DEFAULT_TEMPLATES
from tapkit.models.san.recognition import clip_features, recognize
from tapkit.utils.rle import decode_rle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default=None, help="a CLIP folder (default: the packaged CLIP)")
    parser.add_argument("--sa1b", required=True, help="an SA-1B directory with concept annotations")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--sizes", default="128")
    parser.add_argument("--starts", default="3")
    args = parser.parse_args()
    torch.set_num_threads(1)
    clip = tapkit.load_clip(args.clip)
    visual = clip.model.visual
    names = concept_names()
    text = clip.encode_text([t.format(n) for n in names for t in DEFAULT_TEMPLATES])
    text = F.normalize(text.view(len(names), len(DEFAULT_TEMPLATES), -1).mean(1), dim=-1)
    mean, std = torch.tensor(clip.mean).view(3, 1, 1), torch.tensor(clip.std).view(3, 1, 1)
    counts: dict = {}
    for path in sorted(Path(args.sa1b).glob("*.json"))[: args.images]:
        record = json.loads(path.read_text())
        image = Image.open(path.with_name(record["image"]["file_name"])).convert("RGB")
        anns = [a for a in record["annotations"] if a.get("concept")]
        if not anns:
            continue
        masks = torch.from_numpy(np.stack([decode_rle(a["segmentation"]) for a in anns])).float()
        labels = [names.index(a["concept"]) for a in anns]
        for size in (int(s) for s in args.sizes.split(",")):
            x = torch.from_numpy(np.array(image.resize((size, size), Image.BICUBIC))).permute(2, 0, 1).float() / 255
            x = ((x - mean) / std)[None]
            grid = size // visual.patch_size
            frac = F.adaptive_avg_pool2d(masks[None], (grid, grid))[0]
            keep = (frac >= 0.3) | (frac == frac.flatten(1).max(1).values[:, None, None])
            bias = torch.where(keep, 0.0, -100.0)[None, None].expand(1, visual.heads, -1, -1, -1)
            for start in (int(s) for s in args.starts.split(",")):
                with torch.inference_mode():
                    emb = recognize(visual, start, clip_features(visual, x, set(), start), bias)[0]
                pred = (emb @ text.t()).argmax(-1).tolist()
                c = counts.setdefault((size, start), [0, 0, 0, 0])
                for p, t in zip(pred, labels):
                    c[0] += 1
                    c[1] += p == t
                    c[2] += names[p].split()[1] == names[t].split()[1]
                    c[3] += names[p].split()[0] == names[t].split()[0]
    print("| CLIP input px | recognition from block | regions | top-1 | shape right | colour right |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (size, start), (n, top1, shape, colour) in sorted(counts.items()):
        print(f"| {size} | {start} | {n} | {top1 / n:.3f} | {shape / n:.3f} | {colour / n:.3f} |")


if __name__ == "__main__":
    main()
