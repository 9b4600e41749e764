#!/usr/bin/env bash
# The one prepared GPU check, run on a lent H100/H200 from the repository root:
#   bash benchmarks/gpu/run.sh           (results under $OUT, default ./gpu-out)
# That machine has torch, CuPy, numba(-cuda), nvidia-ml-py, h5py, tensorboard... but not
# MONAI, nibabel or OpenSlide: their wheels are carried in .gpu/wheels (made on the dev
# machine with `pip download --no-deps --python-version 3.12 ...`, see benchmarks/RESULTS.md).
# NVFlare (and the Flower / SimpleITK peers) are not carried: the federation tests and the
# peers that need them are skipped there and measured on the CPU machine instead.
# `fedimg bench` measures fedimg alone (aggregate, deface); the ratios against the MONAI
# tutorial loop and the plain tile loop come from the benchmarks/ scripts (train, tiles),
# which time fedimg's side with the same fedimg.bench functions.
# Everything is time-boxed so the whole script ends in < 8 minutes.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONPATH=$PWD PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg
LOG=$OUT/log.txt
SUM=$OUT/summary.txt
: >"$LOG"; : >"$SUM"
step() {  # step NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  local t0=$SECONDS
  echo "=== $name: $*" >>"$LOG"
  timeout "$secs" "$@" >>"$LOG" 2>&1
  local rc=$?
  printf '%-18s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - t0))" | tee -a "$SUM"
}
{ nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv;
  $PY -c "import torch, cupy, numba; print('torch', torch.__version__, 'cupy', cupy.__version__, 'numba', numba.__version__)"; } >"$OUT/device.txt" 2>&1
step install 30 $PY -m pip install -q --no-deps --no-index .gpu/wheels/*.whl
# GPU parity / smoke tests (CPU-only tests are CI's job).
step pytest-gpu 180 $PY -m pytest -q -m gpu -p no:cacheprovider --timeout 120 \
  tests/kernels tests/deface tests/engine tests/pathology tests/test_telemetry.py --junitxml="$OUT/pytest-gpu.xml"
step bench-aggregate 60 $PY -m fedimg -q bench aggregate --quick --json "$OUT/aggregate.json"
step bench-deface 45 $PY -m fedimg -q bench deface --quick --device cuda --json "$OUT/deface.json"
step bench-train 100 $PY benchmarks/train_throughput.py --quick --device cuda --json "$OUT/train.json"
step bench-tiles 60 $PY benchmarks/tiles.py --quick --device cuda --json "$OUT/tiles.json"
grep -E "passed|failed|error" "$LOG" | tail -5 >>"$SUM"
cat "$SUM"
