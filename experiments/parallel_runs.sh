#!/usr/bin/env bash
# Runs sparsity-study runs as parallel processes on one machine (e.g. several small trainings
# sharing one GPU), each `experiments/sparsity_run.py` in its own workdir; finished runs are
# resumed/skipped exactly as a rerun of that command would.
#
#   PYTHON=.venv/bin/python JOBS=8 LIMIT=600 bash experiments/parallel_runs.sh RUNS WORKDIR
#
# RUNS: a file with one run per line, "NAME CONFIG[:ARGS]" (e.g. from
# `python experiments/sparsity_runs.py --sweep=...`); each run goes to WORKDIR/NAME, its log to
# WORKDIR/NAME.log. JOBS processes at a time; LIMIT seconds for all of them (what finished stays).
# On a GPU each process takes MEM_FRACTION of its memory (default 0.9 / JOBS), and float32 matrix
# products run at PRECISION (default "highest": full float32, as on the CPU; "default" lets the
# GPU use TF32 for convolutions, several times faster for the U-Net).
set -uo pipefail
RUNS=${1:?usage: parallel_runs.sh RUNS WORKDIR}
WORKDIR=${2:?usage: parallel_runs.sh RUNS WORKDIR}
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-4}
LIMIT=${LIMIT:-3600}
cd "$(dirname "$0")/.."
mkdir -p "$WORKDIR"
export PYTHON WORKDIR
export XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-$(python3 -c "print(round(0.9 / $JOBS, 3))")}
export JAX_DEFAULT_MATMUL_PRECISION=${PRECISION:-highest}
one() {
  local name=$1 config=$2 start=$SECONDS
  "$PYTHON" experiments/sparsity_run.py --config="$config" --workdir="$WORKDIR/$name" \
      > "$WORKDIR/$name.log" 2>&1
  echo "$name rc=$? $((SECONDS - start))s"
}
export -f one
timeout "$LIMIT" xargs -P "$JOBS" -L 1 bash -c 'one "$0" "$1"' < "$RUNS"
echo "parallel_runs: rc=$? (124: the time limit stopped the unfinished runs)"
