#!/usr/bin/env bash
# Evaluate a frame-flow checkpoint like the CPU recipe (issue 10): usage scripts/eval_frames_recipe.sh CKPT OUT.
# Evaluate the checkpoint: 32 samples (8 x 60/80/100/128, Euler 100) against 200 val domains;
# then bench_frames for the sampling trace (scripts/bench_solvers.py compares the solvers, dopri5 included).
set -euo pipefail
CKPT=${1:-runs/frames_cpu/last.ckpt}
OUT=${2:-outputs/recipe}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
.venv/bin/proteinflow sample --ckpt "$CKPT" --lengths 60 80 100 128 --num 8 --solver euler --steps 100 \
    --seed 0 --out "$OUT/samples_euler100"
.venv/bin/proteinflow eval "$OUT/samples_euler100" --reference data/prepared/cath_val --reference-max 200 \
    --out "$OUT/eval_euler100" --no-progress
.venv/bin/python scripts/bench_frames.py --ckpt "$CKPT" --out "$OUT/bench" --lengths 60 --num 2 \
    --trace-num 4 --trace-lengths 60 100 128
