"""How a model's box captions get their relations wrong: is the named related shape in
the image at all, and is the direction word right *for the shape it names* (by box
centres, as the world's `direction` reads centres)? Separates "does not find the
nearest shape" from "does not know left from right".

    python scripts/relation_breakdown.py --sa1b scratch/world_eval/sa1b [--checkpoint M.safetensors \
        --tokenizer T.model --concepts C.pkl] [--max-images 200]
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

import tapkit
from tapkit.data.records import SkipCounter, load_rgb
from tapkit.data.sa1b import read_sa1b
from tapkit.data.synth import direction
from tapkit.inputs.prompts import Prompt
from tapkit.predictor.predictor import Predictor
from tapkit.training.caption_truth import parse_caption


def centre(bbox) -> tuple[float, float]:
    x, y, w, h = bbox
    return x + w / 2, y + h / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sa1b", required=True)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--concepts", default=None)
    parser.add_argument("--max-images", type=int, default=None)
    args = parser.parse_args()
    model = tapkit.load_model(args.checkpoint, tokenizer=args.tokenizer, concepts=args.concepts).eval()
    predictor = Predictor(model)
    counts: Counter = Counter()
    said_directions: Counter = Counter()
    for record in read_sa1b(args.sa1b)[: args.max_images]:
        rgb = load_rgb(record.path, SkipCounter())
        if rgb is None or not record.regions:
            continue
        predictor.set_image(rgb)
        boxes = [Prompt(box=(x, y, x + w - 1, y + h - 1)) for x, y, w, h in (r.bbox for r in record.regions)]
        out = predictor.predict(boxes, top_k=1, captions=True, embeddings=False)
        for k, (region, result) in enumerate(zip(record.regions, out)):
            said, truth = parse_caption(result.caption), parse_caption(region.caption)
            if not truth.states_relation:
                continue
            counts["regions with a neighbour"] += 1
            if not said.states_relation:
                continue
            counts["relation stated"] += 1
            said_directions[said.direction] += 1
            named = [o for j, o in enumerate(record.regions) if j != k and o.concept == " ".join(map(str, said.related))]
            if not named:
                continue
            counts["named shape is in the image"] += 1
            nearest_named = min(named, key=lambda o: np.hypot(*np.subtract(centre(o.bbox), centre(region.bbox))))
            if direction(centre(region.bbox), centre(nearest_named.bbox)) == said.direction:
                counts["direction right for the shape it names"] += 1
            if said.related == truth.related:
                counts["named shape is the nearest"] += 1
                counts["direction right, nearest named"] += said.direction == truth.direction
    n = counts["regions with a neighbour"]
    print(f"| box captions of {n} regions that have a neighbour | count | share |")
    print("| --- | --- | --- |")
    for key in ("relation stated", "named shape is in the image", "direction right for the shape it names",
                "named shape is the nearest", "direction right, nearest named"):
        print(f"| {key} | {counts[key]} | {counts[key] / max(n, 1):.3f} |")
    print("directions said:", dict(said_directions))


if __name__ == "__main__":
    main()
