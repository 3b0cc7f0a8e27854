"""What does a model's semantic token know of the neighbourhood? Linear probes on the
routed semantic token of box prompts: the subject's concept (a sanity check: the
concept head reads it), and the caption's direction and related shape (the nearest
other shape's concept). Trained on regions of one SA-1B directory, measured on
another; also prints the direction and related-shape balance of the training captions.

    python scripts/caption_probe.py --train scratch/world_train/sa1b --test scratch/world_eval/sa1b \
        --train-images 600 [--checkpoint runs/x/model.safetensors]
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import torch
from tqdm import tqdm

import tapkit
from tapkit.data.records import SkipCounter, load_rgb
from tapkit.data.sa1b import read_sa1b
from tapkit.data.synth import RELATIONS, concept_names
from tapkit.inputs.prompts import Prompt
from tapkit.predictor.predictor import Predictor
from tapkit.training.caption_truth import parse_caption

NONE = "none"


def features(model, sa1b: str, images: int | None):
    """Semantic tokens (N, C) of every region's box prompt and the region's facts."""
    predictor = Predictor(model)
    tokens, facts = [], []
    skips = SkipCounter()
    for record in tqdm(read_sa1b(sa1b)[:images], desc=f"tokens {sa1b}", unit="img"):
        rgb = load_rgb(record.path, skips)
        if rgb is None or not record.regions:
            continue
        predictor.set_image(rgb)
        boxes = [(x, y, x + w - 1, y + h - 1) for x, y, w, h in (r.bbox for r in record.regions)]
        points = np.stack(predictor.encode_prompts([Prompt(box=b) for b in boxes]))
        tokens.append(predictor.decode_points(points).sem_tokens.float())
        facts += [parse_caption(r.caption) for r in record.regions]
    return torch.cat(tokens), facts


def probe(x_train, y_train, x_test, y_test, classes: int, steps: int = 300) -> tuple[float, float]:
    """Multinomial logistic regression (standardized inputs, a little weight decay):
    (train accuracy, test accuracy)."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mean) / std, (x_test - mean) / std
    layer = torch.nn.Linear(a.shape[1], classes)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(layer(a), y_train).backward()
        opt.step()
    with torch.no_grad():
        return (float((layer(a).argmax(1) == y_train).float().mean()), float((layer(b).argmax(1) == y_test).float().mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--train-images", type=int, default=600)
    parser.add_argument("--test-images", type=int, default=None)
    parser.add_argument("--checkpoint", default=None, help="default: the packaged model")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = tapkit.load_model(args.checkpoint).eval()
    x_train, f_train = features(model, args.train, args.train_images)
    x_test, f_test = features(model, args.test, args.test_images)
    concepts = concept_names() + [NONE]
    directions = list(RELATIONS) + [NONE]
    tasks = {
        "subject concept": (concepts, lambda f: " ".join(map(str, f.subject))),
        "direction": (directions, lambda f: f.direction or NONE),
        "related shape": (concepts, lambda f: " ".join(map(str, f.related)) if f.states_relation else NONE),
    }
    print(f"{len(f_train)} training regions, {len(f_test)} test regions, tokens {x_train.shape[1]}-d")
    print("| probe on the semantic token | classes | majority class (test) | train acc | test acc |")
    print("| --- | --- | --- | --- | --- |")
    for name, (labels, of) in tasks.items():
        index = {label: i for i, label in enumerate(labels)}
        y_train = torch.tensor([index[of(f)] for f in f_train])
        y_test = torch.tensor([index[of(f)] for f in f_test])
        majority = Counter(y_test.tolist()).most_common(1)[0][1] / len(y_test)
        train_acc, test_acc = probe(x_train, y_train, x_test, y_test, len(labels))
        print(f"| {name} | {len(labels)} | {majority:.3f} | {train_acc:.3f} | {test_acc:.3f} |")
    counts = Counter(f.direction or NONE for f in f_train)
    print("training captions by direction:", dict(counts))
    related = Counter(f.related_shape or NONE for f in f_train)
    print("training captions by related shape:", dict(related))


if __name__ == "__main__":
    main()
