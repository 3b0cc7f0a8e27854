"""Options and parsing shared by commands that load a model."""

from __future__ import annotations

import argparse

from tapkit.errors import UserError
from tapkit.loading import DTYPES, load_clip, load_model
from tapkit.models.interface import PromptableModel
from tapkit.models.families import ALL_PRESETS
from tapkit.segmenter.load import load_segmenter


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="weights of a TAP (official .pkl, .safetensors, torch file), a SAM (official sam_vit_*.pth) or an "
        "SCA (tapkit .safetensors or a released segment-caption-anything directory); the family is recognised "
        "from the contents (default: the packaged default model)",
    )
    group.add_argument("--tokenizer", metavar="TOKENIZER", help="TAP: SentencePiece model for captions; SCA: the language model's tokenizer (without it: no captions)")
    group.add_argument("--concepts", metavar="CONCEPTS_PKL", help="TAP: concept vocabulary, e.g. merged_2560.pkl (without it: no concept names)")
    group.add_argument("--preset", choices=ALL_PRESETS, help="assert the architecture instead of reading it off the weights")
    group.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    group.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="compute dtype (default: float32)")
    group.add_argument("--max-caption-tokens", type=int, metavar="N",
                       help="longest caption, in tokens with EOS (default: the model's own: TAP 38 as the reference, "
                       "released SCA 19 as its generate(max_length=20))")


def model_from_args(args: argparse.Namespace):
    model = load_model(args.checkpoint, tokenizer=args.tokenizer, concepts=args.concepts, device=args.device,
                       dtype=args.dtype, preset=args.preset)
    if args.max_caption_tokens is not None:
        try:
            model.set_max_caption_tokens(args.max_caption_tokens)
        except ValueError as err:
            raise UserError(f"--max-caption-tokens: {err}") from None
    if not isinstance(model, PromptableModel):
        if model.family == "san":
            raise UserError(f"{args.checkpoint} is a SAN checkpoint: it takes class names, not prompts "
                            "(`tapkit segment IMAGE --classes ... --checkpoint` it, or tapkit.load_segmenter)")
        raise UserError(f"{args.checkpoint} is a {model.family.upper()} checkpoint: it takes no prompts (a CLIP embeds text "
                        "and images: tapkit.load_clip, `tapkit concepts build --clip`); give a TAP, SAM or SCA checkpoint")
    return model


def add_clip_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("CLIP")
    group.add_argument("--clip", metavar="PATH_OR_DEFAULT",
                       help="a CLIP: open_clip hub folder, transformers CLIPModel folder, or OpenAI-format state dict "
                            "(.pt/.bin/.safetensors, with --clip-tokenizer); 'default': the packaged CLIP")
    group.add_argument("--clip-tokenizer", metavar="FOLDER", help="folder with vocab.json + merges.txt (for a bare state dict)")
    group.add_argument("--clip-activation", choices=("quick_gelu", "gelu"),
                       help="for a bare state dict, which records none (default: quick_gelu, as OpenAI's weights)")


def clip_from_args(args: argparse.Namespace):
    path = None if args.clip == "default" else args.clip
    quick_gelu = None if args.clip_activation is None else args.clip_activation == "quick_gelu"
    return load_clip(path, tokenizer=args.clip_tokenizer, device=args.device, quick_gelu=quick_gelu)


def parse_numbers(text: str, count: tuple[int, ...], what: str) -> list[float]:
    """'1,2,3' -> [1.0, 2.0, 3.0], checking how many numbers there are."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{what} must be comma-separated numbers, got '{text}'") from None
    if len(values) not in count:
        raise UserError(f"{what} takes {' or '.join(map(str, count))} numbers, got '{text}'")
    return values


def add_segmenter_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--checkpoint", metavar="CKPT",
                       help="an open-vocabulary segmenter: a tapkit SAN .safetensors (or its folder with the "
                            "tokenizer), or a released san_vit_b_16.pth / san_vit_large_14.pth with --tokenizer "
                            "(default: the packaged SAN trained on the synthetic world)")
    group.add_argument("--tokenizer", metavar="FOLDER", help="folder with the CLIP's vocab.json + merges.txt "
                       "(OpenAI's for released SAN checkpoints; default: next to the checkpoint)")
    group.add_argument("--input-size", type=int, metavar="PX", help="short side the image is resized to "
                       "(default: the model's training size; 640 for released SAN)")
    group.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    group.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="compute dtype (default: float32)")


def segmenter_from_args(args: argparse.Namespace):
    if args.input_size is not None and args.input_size < 16:
        raise UserError("--input-size must be >= 16")
    return load_segmenter(args.checkpoint, tokenizer=args.tokenizer, device=args.device, dtype=args.dtype,
                          input_size=args.input_size)
