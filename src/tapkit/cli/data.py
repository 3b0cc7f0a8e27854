"""`tapkit data`: the synthetic world, SemanticSA-1B shards, caption tokenizers and
the synthetic-world evaluation."""

from __future__ import annotations

import argparse
import json
import os

from tapkit.errors import UserError

EPILOG = """\
examples:
  tapkit data synth --out world --images 4000 --seed 0
  tapkit concepts build --names world/concepts.txt --stand-in-dim 256 --out concepts.pkl
  tapkit data semantic --sa1b world/sa1b --concepts concepts.pkl --out semantic --teacher stand-in
  tapkit data semantic --sa1b world/sa1b --concepts concepts.pkl --out semantic --teacher clip --clip default
  torchrun --nproc_per_node 8 -m tapkit.cli.main data semantic --sa1b /data/sa1b --concepts merged_2560.pkl \\
      --out /data/semantic --teacher clip --clip open_clip_vit_b16/ --device cuda
  tapkit data synth-semseg --out semseg_train --images 4000 --seed 0 --split train
  tapkit data tokenizer --vg world/vg_regions.json --out tokenizer.model --vocab-size 128
  tapkit data clip-tokenizer --vg world/vg_regions.json --names world/concepts.txt --out clip_tokenizer
  tapkit data evaluate --sa1b heldout/sa1b --output report.json        (the packaged default model)
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="build training data (synthetic world, SemanticSA-1B, tokenizer) and evaluate",
                              description="Build and check training data.", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    s = sub.add_parser("synth", help="write a synthetic shapes world in SA-1B, Visual Genome and COCO formats")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--images", type=int, required=True, help="number of images")
    s.add_argument("--seed", type=int, default=0, help="world seed (scene i depends only on seed and i)")
    s.add_argument("--size", type=int, default=256, help="image side in pixels (default: 256)")
    s.add_argument("--captions", choices=("full", "subject", "short"), default="full",
                   help="'full': 'a small striped red circle left of a blue star' (the relation to the nearest shape); "
                        "'subject': 'a small striped red circle'; 'short': 'a small red circle' (no texture); "
                        "the images and masks are the same (default: full)")
    s.set_defaults(func=run_synth)

    g = sub.add_parser("synth-semseg", help="write synthetic semantic label maps (background + 48 names) with the "
                       "open-vocabulary split (stage san, tapkit eval semseg --dataset synthetic)")
    g.add_argument("--out", required=True, help="output directory (images/, labels/, classes.txt, unseen.txt)")
    g.add_argument("--images", type=int, required=True, help="number of images")
    g.add_argument("--seed", type=int, default=0, help="world seed (scene i depends only on seed and i)")
    g.add_argument("--size", type=int, default=256, help="image side in pixels (default: 256)")
    g.add_argument("--split", choices=("train", "eval"), required=True,
                   help="train: the 8 unseen names' pixels are ignored (255); eval: every class labelled")
    g.set_defaults(func=run_synth_semseg)

    m = sub.add_parser("semantic", help="SemanticSA-1B: teacher embeddings + concept targets per mask, in shards "
                                        "(split across ranks under torchrun)")
    m.add_argument("--sa1b", required=True, help="SA-1B directory (JSON next to JPEG)")
    m.add_argument("--concepts", required=True, help="concept file (tapkit concepts build)")
    m.add_argument("--out", required=True, help="shard directory")
    m.add_argument("--teacher", choices=("clip", "stand-in"), default="clip",
                   help="a CLIP's image tower on a square crop around each mask (--clip), or the synthetic world's "
                        "stand-in (needs 'concept' annotations)")
    m.add_argument("--stand-in-dim", type=int, default=None, help="stand-in embedding size (default: the concept file's)")
    m.add_argument("--temperature", type=float, default=10.0, help="target = softmax(temperature * cosine) (default: 10)")
    m.add_argument("--top-k", type=int, default=16, help="target entries kept per mask (default: 16)")
    m.add_argument("--shard-size", type=int, default=5000, help="masks per shard")
    m.add_argument("--device", default="cpu")
    from tapkit.cli.common import add_clip_options

    add_clip_options(m)
    m.set_defaults(func=run_semantic)

    t = sub.add_parser("tokenizer", help="train a SentencePiece BPE tokenizer on the captions of a VG-style JSON")
    t.add_argument("--vg", required=True, nargs="+", help="Visual Genome COCO-style JSON file(s) with 'caption' per annotation")
    t.add_argument("--out", required=True, help="output .model file")
    t.add_argument("--vocab-size", type=int, default=32000, help="upper bound on the number of pieces (default: 32000)")
    t.set_defaults(func=run_tokenizer)

    c = sub.add_parser("clip-tokenizer", help="train a small CLIP byte-level BPE (vocab.json + merges.txt) on captions "
                                              "and concept names")
    c.add_argument("--vg", nargs="+", default=[], help="Visual Genome COCO-style JSON file(s) with 'caption' per annotation")
    c.add_argument("--names", help="concept names, one per line (each also in the prompt templates)")
    c.add_argument("--out", required=True, help="output folder (vocab.json, merges.txt)")
    c.add_argument("--merges", type=int, default=256, help="most merges learned (default: 256)")
    c.set_defaults(func=run_clip_tokenizer)

    z = sub.add_parser("evaluate-clip", help="zero-shot top-1 of a CLIP on the named regions of an SA-1B directory "
                                             "(square crops against every name)")
    z.add_argument("--sa1b", required=True, help="SA-1B directory with 'concept' annotations")
    z.add_argument("--names", help="the candidate names, one per line (default: the 48 colour-shape names)")
    z.add_argument("--templates", help="prompt templates with {}, one per line (default: the 3 photo templates)")
    z.add_argument("--output", "-o", help="write the report JSON here (default: print)")
    z.add_argument("--device", default="cpu")
    from tapkit.cli.common import add_clip_options

    add_clip_options(z)
    z.set_defaults(func=run_evaluate_clip, clip="default")

    e = sub.add_parser("evaluate", help="mask mIoU (point, box), concept top-1, caption CIDEr-D and whole-caption truth "
                                        "(subject, related shape, direction) on a synthetic world")
    e.add_argument("--sa1b", required=True, help="held-out SA-1B directory with concept/caption annotations")
    e.add_argument("--max-images", type=int, default=None)
    e.add_argument("--output", "-o", help="write the report JSON here (default: print)")
    from tapkit.cli.common import add_model_options

    add_model_options(e)
    e.set_defaults(func=run_evaluate)


def run_synth(args) -> int:
    from tapkit.data.synth import write_world

    if args.images < 1 or args.size < 32:
        raise UserError("--images must be >= 1 and --size >= 32")
    summary = write_world(args.out, args.images, args.seed, args.size, captions=args.captions)
    print(f"wrote {summary.images} images, {summary.regions} regions to {summary.out}")
    return 0


def run_synth_semseg(args) -> int:
    from tapkit.data.synth_semseg import write_semseg_world

    if args.images < 1 or args.size < 32:
        raise UserError("--images must be >= 1 and --size >= 32")
    summary = write_semseg_world(args.out, args.images, args.seed, hide_unseen=args.split == "train", size=args.size)
    print(f"wrote {summary.images} label maps ({args.split} split) to {summary.out}")
    return 0


def run_semantic(args) -> int:
    import torch

    from tapkit.data.sa1b import read_sa1b
    from tapkit.cli.common import clip_from_args
    from tapkit.data.semantic import ClipTeacher, StandInTeacher, build_semantic
    from tapkit.data.text_encoders import HashText
    from tapkit.models.tap.concepts import ConceptVocabulary

    vocab = ConceptVocabulary.load(args.concepts)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if args.teacher == "stand-in":
        teacher = StandInTeacher(HashText(args.stand_in_dim or vocab.embed_dim))
    else:
        if not args.clip:
            raise UserError("--teacher clip needs --clip (a CLIP checkpoint, or 'default' for the packaged one)")
        teacher = ClipTeacher(clip_from_args(args))
    if teacher.dim != vocab.embed_dim:
        raise UserError(f"teacher embeddings are {teacher.dim}-d but the concept file's are {vocab.embed_dim}-d")
    summary = build_semantic(read_sa1b(args.sa1b), teacher, vocab.weights, args.out, rank, world,
                             args.temperature, args.top_k, args.shard_size)
    print(f"rank {rank}/{world}: {summary.regions} masks from {summary.images} images in {len(summary.shards)} shard(s); "
          f"skipped {summary.skips.total} unreadable image(s)")
    del torch
    return 0


def run_tokenizer(args) -> int:
    from tapkit.data.coco_style import load_json
    from tapkit.training.tokenizer import train_sentencepiece

    captions = []
    for path in args.vg:
        captions += [str(a["caption"]) for a in load_json(path)["annotations"] if a.get("caption")]
    out = train_sentencepiece(captions, args.out, args.vocab_size)
    print(f"trained a tokenizer on {len(captions)} captions: {out}")
    return 0


def run_clip_tokenizer(args) -> int:
    from tapkit.data.coco_style import load_json
    from tapkit.data.text_encoders import DEFAULT_TEMPLATES, read_names
    from tapkit.training.clip_vocab import train_clip_bpe

    texts = []
    for path in args.vg:
        texts += [str(a["caption"]) for a in load_json(path)["annotations"] if a.get("caption")]
    if args.names:
        texts += [t.format(name) for name in read_names(args.names) for t in ("{}",) + DEFAULT_TEMPLATES]
    out = train_clip_bpe(texts, args.out, args.merges)
    print(f"trained a CLIP tokenizer on {len(texts)} texts: {out}")
    return 0


def run_evaluate_clip(args) -> int:
    from tapkit.cli.common import clip_from_args
    from tapkit.data.sa1b import read_sa1b
    from tapkit.data.synth import concept_names
    from tapkit.data.text_encoders import DEFAULT_TEMPLATES, read_names
    from tapkit.evaluation.clip_zero_shot import zero_shot_crops

    names = read_names(args.names) if args.names else concept_names()
    templates = tuple(read_names(args.templates)) if args.templates else DEFAULT_TEMPLATES
    if any("{}" not in t for t in templates):
        raise UserError("every template needs a {} where the name goes")
    report = zero_shot_crops(clip_from_args(args), read_sa1b(args.sa1b), names, templates)
    _print_or_write(report.to_dict(), args.output)
    return 0


def _print_or_write(report: dict, output: str | None) -> None:
    from tapkit.utils.atomic import write_text_atomic

    text = json.dumps(report, indent=2)
    if output:
        write_text_atomic(output, text + "\n")
        print(f"wrote {output}")
    else:
        print(text)


def run_evaluate(args) -> int:
    from tapkit.cli.common import model_from_args
    from tapkit.training.synth_eval import evaluate_world

    _print_or_write(evaluate_world(model_from_args(args), args.sa1b, args.max_images).to_dict(), args.output)
    return 0
