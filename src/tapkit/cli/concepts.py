"""`tapkit concepts build`: concept names -> a concept file in the official format."""

from __future__ import annotations

import argparse

from tapkit.errors import UserError

EPILOG = """\
examples:
  tapkit concepts build --names names.txt --clip-model ViT-B-32 --clip-pretrained laion2b_s34b_b79k --out my_concepts.pkl
  tapkit concepts build --names world/concepts.txt --stand-in-dim 256 --out concepts.pkl   (synthetic world)
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("concepts", help="build concept vocabularies", description="Concept vocabularies.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="concepts_command", metavar="SUBCOMMAND", required=True)
    b = sub.add_parser("build", help="names (one per line) -> [weights (D, N), names] pickle")
    b.add_argument("--names", required=True, help="text file, one concept name per line")
    b.add_argument("--out", required=True, help="output .pkl")
    b.add_argument("--clip-model", help="open_clip model name, e.g. ViT-B-32")
    b.add_argument("--clip-pretrained", help="open_clip pretrained tag or local weights file")
    b.add_argument("--stand-in-dim", type=int, help="use the deterministic hashed-word text encoder of this size instead of CLIP")
    b.add_argument("--template", action="append", help="prompt template with {} (repeatable; default: 3 photo templates)")
    b.add_argument("--device", default="cpu")
    b.set_defaults(func=run_build)


def run_build(args) -> int:
    from tapkit.data.text_encoders import DEFAULT_TEMPLATES, HashText, OpenClipText, concept_weights, read_names, write_concept_file

    if bool(args.clip_model) == bool(args.stand_in_dim):
        raise UserError("give exactly one of --clip-model or --stand-in-dim")
    templates = tuple(args.template or DEFAULT_TEMPLATES)
    if any("{}" not in t for t in templates):
        raise UserError("every --template needs a {} where the name goes")
    names = read_names(args.names)
    encoder = HashText(args.stand_in_dim) if args.stand_in_dim else OpenClipText(args.clip_model, args.clip_pretrained, args.device)
    weights = concept_weights(names, encoder, templates)
    path = write_concept_file(args.out, weights, names)
    print(f"wrote {len(names)} concepts ({weights.shape[0]}-d) to {path}")
    return 0
