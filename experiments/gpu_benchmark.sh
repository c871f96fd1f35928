#!/usr/bin/env bash
# GoldDiff on one GPU in under 5 minutes: seconds per batch-step next to the paper's
# 0.087 s (CIFAR-10: N = 50,000, 32×32×3, batch 16, k 2500…5000, θ = 0.03) and 0.351 s
# (AFHQv2: N ≈ 14,630, 64×64×3, batch 32, k 1000…2000, θ = 0.04).
#
#   PYTHON=.venv/bin/python OUT=/tmp/gpu_benchmark bash experiments/gpu_benchmark.sh
#
# Needs a JAX with GPU support in $PYTHON's environment (pip install -e . plus jax[cuda12]).
# The databases are procedural images of the datasets' sizes and shapes (no download; the
# machine may be offline), so the numbers are speed only. Each part has its own time limit, and
# whatever finished is in $OUT (text tables and JSON with every step's seconds).
# CIFAR_LIMIT and AFHQ_LIMIT (seconds) change the two parts' time limits (170 and 110).
# Variants: `golddiff` is the default (auto mask form per step, closed-form expansion at the
# highest-noise steps); `golddiff:dense+high_noise=pool` is the published algorithm's work
# (dense masked product over the random pool at every step), in the same process.
set -uo pipefail
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_benchmark}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true;
  "$PYTHON" -c "import jax; print(jax.__version__, jax.devices())"; } 2>&1 | tee "$OUT/machine.txt"

timeout "${CIFAR_LIMIT:-170}" "$PYTHON" experiments/benchmark.py --num_images=50000 --resolution=32 --channels=3 \
    --batch=16 --k_min=2500 --k_max=5000 --mask_threshold=0.03 --nowarmup \
    "--methods=golddiff,golddiff:dense+high_noise=pool" \
    --output="$OUT/cifar10_size.json" 2>&1 | grep -v "^I[0-9]" | tee "$OUT/cifar10_size.txt"

timeout "${AFHQ_LIMIT:-110}" "$PYTHON" experiments/benchmark.py --num_images=14630 --resolution=64 --channels=3 \
    --batch=32 --k_min=1000 --k_max=2000 --mask_threshold=0.04 --nowarmup \
    "--methods=golddiff" \
    --output="$OUT/afhq_size.json" 2>&1 | grep -v "^I[0-9]" | tee "$OUT/afhq_size.txt"
echo "done: $OUT"
