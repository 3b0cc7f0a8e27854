#!/usr/bin/env bash
# Rebuilds tapkit's packaged default model from nothing (CPU is enough; about four hours
# on one core). Run from the repository root after `pip install -e ".[train]"`.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
tapkit data synth --out scratch/world_train --images 4000 --seed 0
tapkit data synth --out scratch/world_eval --images 200 --seed 1
# The packaged CLIP (src/tapkit/assets/clip; docs/clip.md), then its concept file and SemanticSA-1B teacher.
tapkit data clip-tokenizer --vg scratch/world_train/vg_regions.json --names scratch/world_train/concepts.txt \
    --out scratch/clip_tokenizer --merges 512
tapkit train configs/clip_synthetic.yaml
python scripts/package_clip.py runs/clip_synthetic/model.safetensors --tokenizer scratch/clip_tokenizer
python scripts/plain_drawings.py --out scratch/plain_clip --images 60 --seed 0
tapkit data evaluate-clip --clip default --sa1b scratch/world_eval/sa1b --output docs/clip_zero_shot_eval.json
tapkit data evaluate-clip --clip default --sa1b scratch/plain_clip --output docs/clip_zero_shot_plain.json
tapkit concepts build --clip default --names scratch/world_train/concepts.txt --out scratch/concepts.pkl
tapkit data semantic --sa1b scratch/world_train/sa1b --concepts scratch/concepts.pkl --out scratch/semantic \
    --teacher clip --clip default
tapkit data tokenizer --vg scratch/world_train/vg_regions.json --out scratch/tokenizer.model --vocab-size 128
tapkit train configs/default_segment.yaml
tapkit train configs/default_concepts.yaml
tapkit train configs/default_concepts_more.yaml
tapkit train configs/default_concepts_long.yaml
tapkit train configs/default_iou.yaml
tapkit train configs/default_final.yaml
tapkit train configs/default_caption.yaml
python scripts/package_default_model.py runs/default_caption/model.safetensors \
    --tokenizer scratch/tokenizer.model --concepts scratch/concepts.pkl
tapkit data evaluate --sa1b scratch/world_eval/sa1b --output docs/default_model_eval.json
python scripts/plain_drawings.py --out scratch/plain --images 40 --example examples/shapes.png
tapkit data evaluate --sa1b scratch/plain --output docs/default_model_plain_eval.json
python scripts/plot_curves.py --segment runs/default_segment/metrics.jsonl runs/default_concepts/metrics.jsonl \
    runs/default_concepts_more/metrics.jsonl runs/default_concepts_long/metrics.jsonl runs/default_iou/metrics.jsonl \
    runs/default_final/metrics.jsonl \
    --caption runs/default_caption/metrics.jsonl --out docs/default_model_curves.png
