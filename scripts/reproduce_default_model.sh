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
# Then two cycles mostly in SAN's recognition regime (issue 17; docs/clip.md): the first stopped at step 500.
tapkit train configs/clip_san_regime.yaml --stop-after 500
python scripts/package_clip.py runs/clip_san_regime --tokenizer src/tapkit/assets/clip --out scratch/clip_regime500
tapkit train configs/clip_san_dense.yaml
python scripts/package_clip.py runs/clip_san_dense/model.safetensors --tokenizer src/tapkit/assets/clip \
    --out scratch/clip_dense
# A fourth cycle adding the vocabulary term; the default TAP model's concepts stay on the third.
tapkit train configs/clip_san_names.yaml
python scripts/package_clip.py runs/clip_san_names/model.safetensors --tokenizer scratch/clip_dense
# A fifth cycle teaching shape directly (vocabulary term alone, text tower frozen, quarter turns):
# crops from the fourth cycle, then SAN's regime; the CLIP after its second part is the package.
tapkit train configs/clip_shapes.yaml
python scripts/package_clip.py runs/clip_shapes/model.safetensors --tokenizer src/tapkit/assets/clip --out scratch/clip_shapes
tapkit train configs/clip_shapes_regions_long.yaml
python scripts/package_clip.py runs/clip_shapes_regions_long/model.safetensors --tokenizer scratch/clip_shapes
python scripts/plain_drawings.py --out scratch/plain_clip --images 60 --seed 0
tapkit data evaluate-clip --clip default --sa1b scratch/world_eval/sa1b --output docs/clip_zero_shot_eval.json
tapkit data evaluate-clip --clip default --sa1b scratch/plain_clip --output docs/clip_zero_shot_plain.json
# The packaged open-vocabulary segmenter (SAN on that CLIP; docs/segment.md).
tapkit data synth-semseg --out scratch/semseg_train --images 4000 --seed 0 --split train
tapkit train configs/san_synthetic_v8_side8.yaml
python scripts/package_san.py runs/san_synthetic_v8_side8/model.safetensors --tokenizer src/tapkit/assets/clip
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
# Stage 2b: captions that say only what the model can know ('a small red circle'; docs/training.md).
tapkit data synth --out scratch/world_short --images 4000 --seed 0 --captions short
tapkit train configs/default_truth.yaml
# The automatic-mode settings measured for this model (docs/everything.md) travel in its checkpoint.
python scripts/package_default_model.py runs/default_truth/model.safetensors \
    --tokenizer scratch/tokenizer.model --concepts scratch/concepts.pkl \
    --everything points_per_side=16 pred_iou_thresh=0.7 stability_thresh=0.85 max_border_connectivity=0.2 rank_by=stability \
    box_nms_thresh=0.7 mask_nms_thresh=0.3 concept_vote_iou=0.8
tapkit data evaluate --sa1b scratch/world_eval/sa1b --output docs/default_model_eval.json
python scripts/plain_drawings.py --out scratch/plain --images 40 --example examples/shapes.png
tapkit data evaluate --sa1b scratch/plain --output docs/default_model_plain_eval.json
python scripts/plain_drawings.py --out scratch/plain_sep --images 20 --separated
python scripts/everything_quality.py scratch/plain_sep scratch/world_eval/sa1b --max-images 20 \
    --output docs/default_model_everything_quality.json
# The pictures of the docs: the automatic mode's overlay and the web page.
tapkit everything examples/shapes.png --output scratch/everything_example --overlay --overwrite
cp scratch/everything_example/shapes.png.overlay.png docs/everything-shapes.png
python scripts/screenshot_serve.py --image examples/shapes.png \
    --click 120,80 --click 240,150 --click 248,50 --click 80,185 --out docs/screenshot-serve.png
python scripts/plot_curves.py --segment runs/default_segment/metrics.jsonl runs/default_concepts/metrics.jsonl \
    runs/default_concepts_more/metrics.jsonl runs/default_concepts_long/metrics.jsonl runs/default_iou/metrics.jsonl \
    runs/default_final/metrics.jsonl \
    --caption runs/default_caption/metrics.jsonl --out docs/default_model_curves.png
