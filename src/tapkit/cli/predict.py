"""`tapkit predict`: masks, concepts and captions for prompts on one image."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from tapkit.cli.common import add_model_options, model_from_args, parse_numbers
from tapkit.errors import UserError
from tapkit.inputs.image import as_rgb_array
from tapkit.predictor.predictor import Predictor
from tapkit.inputs.prompts import Prompt, encode_prompt
from tapkit.utils.atomic import check_output_file, write_all_atomic
from tapkit.utils.overlay import draw_overlay, region_label

EPILOG = """\
prompts:
  --point and --box flags together make ONE prompt (several clicks refine one
  region; a box may be combined with clicks). Use --prompts for many regions:
  a JSON list like [{"points": [[x, y, 1], [x, y, 0]]}, {"box": [x1, y1, x2, y2]}].
  Coordinates are pixels of the original image; label 1 = foreground, 0 = background.

examples:
  tapkit predict photo.jpg --checkpoint tap_vit_b_v1_1.pkl --tokenizer text_tokenizer.model \\
      --concepts merged_2560.pkl --point 520,300 --output out.json --overlay out.png
  tapkit predict photo.jpg --checkpoint model.safetensors --prompts prompts.json --output out.json
  tapkit predict photo.jpg --checkpoint sam_vit_h_4b8939.pth --point 520,300     (SAM: masks only)
  tapkit predict photo.jpg --checkpoint segment-caption-anything-gpt2_large-vg/ --box 10,20,300,400 --num-beams 3
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment, name and caption prompted regions of one image",
        description="Segment, name and caption the regions given by point, box or sketch prompts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image", help="image file (JPEG, PNG, ...)")
    p.add_argument("--point", action="append", default=[], metavar="x,y[,label]", help="a click (repeatable; label 1 fg, 0 bg)")
    p.add_argument("--box", metavar="x1,y1,x2,y2", help="a box")
    p.add_argument("--prompts", metavar="PROMPTS.json", help="a JSON list of prompts, one region each")
    p.add_argument("--output", "-o", metavar="OUT.json", help="where to write the regions (default: print to stdout)")
    p.add_argument("--overlay", metavar="OUT.png", help="also draw the masks and labels on the image")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="concepts to list per region (default: 5)")
    p.add_argument("--no-caption", action="store_true", help="skip captioning")
    p.add_argument("--max-batch", type=int, default=64, metavar="N", help="prompts decoded together (default: 64)")
    p.add_argument("--num-beams", type=int, default=1, metavar="K", help="SCA: beam search with K beams for captions (default: 1, greedy)")
    add_model_options(p)
    p.set_defaults(func=run)


def read_prompts(args: argparse.Namespace) -> list[Prompt]:
    prompts: list[Prompt] = []
    if args.point or args.box:
        points = [tuple(parse_numbers(t, (2, 3), "--point")) for t in args.point]
        points = [(x, y, int(rest[0]) if rest else 1) for x, y, *rest in points]
        box = parse_numbers(args.box, (4,), "--box") if args.box else None
        prompts.append(Prompt(points=points, box=box))
    if args.prompts:
        path = Path(args.prompts)
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, IsADirectoryError):
            raise UserError(f"prompts file not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(data, list):
            raise UserError(f"{path} must hold a JSON list of prompts")
        prompts += [Prompt.from_dict(item) for item in data]
    if not prompts:
        raise UserError("no prompts: give --point, --box or --prompts")
    return prompts


def run(args: argparse.Namespace) -> int:
    if args.top_k < 0 or args.max_batch < 1:
        raise UserError("--top-k must be >= 0 and --max-batch >= 1")
    if Path(args.image).is_dir():
        raise UserError(f"{args.image} is a directory: predict takes one image "
                        f"(for every image of a folder: tapkit everything --input-dir {args.image})")
    for path, flag in ((args.output, "--output"), (args.overlay, "--overlay")):
        if path:
            check_output_file(path, flag)
    prompts = read_prompts(args)
    rgb = as_rgb_array(args.image)
    h, w = rgb.shape[:2]
    for prompt in prompts:  # fail on a bad prompt before paying for the model
        encode_prompt(prompt, w, h)
    model = model_from_args(args)
    if args.num_beams != 1:
        if args.num_beams < 1 or model.family != "sca":
            raise UserError("--num-beams applies to SCA checkpoints and must be >= 1")
        model.generation = dataclasses.replace(model.generation, num_beams=args.num_beams)
    predictor = Predictor(model, max_batch=args.max_batch)
    predictor.set_image(rgb)
    regions = predictor.predict(prompts, top_k=args.top_k, captions=not args.no_caption, embeddings=False)
    result = {
        "image": {"path": str(args.image), "height": h, "width": w},
        "regions": [r.to_json() for r in regions],
    }
    text = json.dumps(result, indent=1)
    outputs = []  # written together, all or none
    if args.output:
        outputs.append((args.output, lambda tmp: tmp.write_text(text + "\n")))
    if args.overlay:
        image = draw_overlay(
            rgb,
            [r.mask for r in regions],
            [region_label(r.concept, r.concept_score, r.caption) for r in regions],
            [r.prompt_points for r in regions],
        )
        outputs.append((args.overlay, lambda tmp: image.save(tmp, format="PNG")))
    write_all_atomic(outputs)
    if not args.output:
        print(text)
    return 0
