"""`tapkit concepts build`: concept names -> a concept file in the official format."""

from __future__ import annotations

import argparse

from tapkit.cli.common import add_clip_options, clip_from_args
from tapkit.errors import UserError

EPILOG = """\
examples:
  tapkit concepts build --clip default --names world/concepts.txt --out concepts.pkl   (the packaged CLIP)
  tapkit concepts build --clip open_clip_vit_b16/ --names names.txt --templates templates.txt --out my_concepts.pkl
  tapkit concepts build --clip ViT-B-16.state.pt --tokenizer openai_bpe/ --names names.txt --out my_concepts.pkl
  tapkit concepts build --names world/concepts.txt --stand-in-dim 256 --out concepts.pkl   (hashed-word stand-in)
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("concepts", help="build concept vocabularies", description="Concept vocabularies.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="concepts_command", metavar="SUBCOMMAND", required=True)
    b = sub.add_parser("build", help="names (one per line) -> [weights (D, N), names] pickle")
    b.add_argument("--names", required=True, help="text file, one concept name per line")
    b.add_argument("--out", required=True, help="output .pkl")
    add_clip_options(b)
    b.add_argument("--stand-in-dim", type=int, help="use the deterministic hashed-word text encoder of this size instead of CLIP")
    b.add_argument("--templates", help="text file of prompt templates with {} where the name goes, one per line "
                                       "(default: 'a photo of a {}.', 'a {}.', 'a picture of a {}.')")
    b.add_argument("--template", action="append", help="one prompt template with {} (repeatable; added to --templates)")
    b.add_argument("--device", default="cpu")
    b.set_defaults(func=run_build)


def run_build(args) -> int:
    from tapkit.data.text_encoders import DEFAULT_TEMPLATES, ClipText, HashText, concept_weights, read_names, write_concept_file

    if args.stand_in_dim is not None and args.stand_in_dim < 1:
        raise UserError(f"--stand-in-dim is an embedding size and must be >= 1, got {args.stand_in_dim}")
    if bool(args.clip) == (args.stand_in_dim is not None):
        raise UserError("give exactly one of --clip (a CLIP, or 'default') or --stand-in-dim")
    templates = tuple((read_names(args.templates) if args.templates else []) + (args.template or [])) or DEFAULT_TEMPLATES
    if any("{}" not in t for t in templates):
        raise UserError("every template needs a {} where the name goes")
    names = read_names(args.names)
    encoder = HashText(args.stand_in_dim) if args.stand_in_dim is not None else ClipText(clip_from_args(args))
    weights = concept_weights(names, encoder, templates)
    path = write_concept_file(args.out, weights, names)
    print(f"wrote {len(names)} concepts ({weights.shape[0]}-d) to {path}")
    return 0
