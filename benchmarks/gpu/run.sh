#!/usr/bin/env bash
# The one prepared GPU check, run on a lent H100/H200 from the repository root:
#
#   bash benchmarks/gpu/make_wheels.sh          # here, on the dev machine: fills .gpu/
#   device tool: carry [".gpu"], command `bash benchmarks/gpu/run.sh`, timeout_s 560
#
# Writes under $OUT (default ./gpu-out; at most 8 files come back from the device tool):
#   device.json   commit (git, or .gpu/commit.txt), card, driver, CUDA, versions, numba-CUDA probe
#   summary.txt   one line per step: rc and seconds;   log.txt   everything printed
#   pytest-gpu.xml, train.json, aggregate.json, deface.json, tiles.json
#
# Steps: install the carried wheels; make numba CUDA find NVVM (the image's own libnvvm if it
# works, else the carried .gpu/nvvm-*.tar.xz unpacked as a CUDA_HOME); every GPU test
# (`pytest -m gpu` over the whole tests/ tree, numba CUDA included); every benchmark with its
# peer on --device cuda. Each step is time-boxed and the whole script stops starting steps at
# 470 s (< 8 minutes). `--dry-run` (or FEDIMG_GPU_DRYRUN=1) runs the same steps on the CPU
# with tiny settings and no install, so CI checks the plumbing (tests/bench/test_gpu_script.py);
# there every time limit is multiplied by FEDIMG_GPU_TIMEOUT_SCALE (default 3: a CPU, maybe a
# shared one). `--print-commands` prints each step (name, limit, command) and runs nothing.
# FEDIMG_GPU_STEPS="device pytest-gpu bench-tiles" runs only the steps named.
set -uo pipefail
DRY=${FEDIMG_GPU_DRYRUN:-0}
PRINT=0
for a in "$@"; do
  case "$a" in
    --dry-run) DRY=1 ;;
    --print-commands) PRINT=1 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $a (see --help)" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
PY=${PY:-python3}
SCALE=${FEDIMG_GPU_TIMEOUT_SCALE:-$([ "$DRY" = 1 ] && echo 3 || echo 1)}
DEADLINE=${FEDIMG_GPU_DEADLINE:-$(( 470 * SCALE ))}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
LOG=$OUT/log.txt
SUM=$OUT/summary.txt
[ "$PRINT" = 1 ] || { : >"$LOG"; : >"$SUM"; }
T0=$SECONDS

step() {  # step NAME SECONDS CMD...: run CMD under min(SECONDS x SCALE, time left), log rc and time
  local name=$1 secs=$(( $2 * SCALE )); shift 2
  if [ "$PRINT" = 1 ]; then
    printf '%s\t%s\t%s\n' "$name" "$secs" "$*"; return
  fi
  if [ -n "${FEDIMG_GPU_STEPS:-}" ] && [[ " $FEDIMG_GPU_STEPS " != *" $name "* ]]; then
    printf '%-16s skipped (not in FEDIMG_GPU_STEPS)\n' "$name" | tee -a "$SUM"; return
  fi
  local left=$(( DEADLINE - (SECONDS - T0) ))
  if [ "$left" -lt 10 ]; then
    printf '%-16s skipped (deadline %ss reached)\n' "$name" "$DEADLINE" | tee -a "$SUM"; return
  fi
  [ "$secs" -gt "$left" ] && secs=$left
  local t=$SECONDS
  echo "=== $name (limit ${secs}s): $*" >>"$LOG"
  timeout -k 5 "$secs" "$@" >>"$LOG" 2>&1
  local rc=$?
  printf '%-16s rc=%-3s %4ss%s\n' "$name" "$rc" "$((SECONDS - t))" "$([ $rc = 124 ] && echo ' (timed out)')" | tee -a "$SUM"
}

if [ "$DRY" = 1 ]; then
  DEV=cpu
  [ "$PRINT" = 1 ] || echo "dry run: CPU, tiny settings, no install" | tee -a "$SUM"
elif [ "$PRINT" = 1 ]; then
  DEV=cuda
else
  DEV=cuda
  # 1. wheels the image lacks (MONAI, nibabel, OpenSlide, peers), into a private folder
  SITE=/tmp/fedimg-site
  if ls .gpu/wheels/*.whl >/dev/null 2>&1; then
    step install 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" .gpu/wheels/*.whl
    export PYTHONPATH=$PYTHONPATH:$SITE
  else
    echo "install          skipped: no .gpu/wheels (run benchmarks/gpu/make_wheels.sh, carry .gpu)" | tee -a "$SUM"
  fi
  # 2. NVVM: the image's own if numba can use it, else the carried one
  export FEDIMG_NVVM_SOURCE=image
  if ! timeout 60 "$PY" benchmarks/gpu/device_info.py --numba-probe >>"$LOG" 2>&1; then
    TAR=$(ls .gpu/nvvm-*.tar.xz 2>/dev/null | tail -1)
    if [ -n "$TAR" ]; then
      mkdir -p /tmp/fedimg-cuda && tar -C /tmp/fedimg-cuda -xJf "$TAR"
      export CUDA_HOME=/tmp/fedimg-cuda FEDIMG_NVVM_SOURCE="carried ${TAR##*/}"
      export LD_LIBRARY_PATH=/tmp/fedimg-cuda/nvvm/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
      step numba-nvvm 60 "$PY" benchmarks/gpu/device_info.py --numba-probe
    else
      export FEDIMG_NVVM_SOURCE="none (image's NVVM unusable and none carried)"
    fi
  fi
  echo "nvvm             ${FEDIMG_NVVM_SOURCE}" | tee -a "$SUM"
fi
DRYFLAG=$([ "$DRY" = 1 ] && echo --dry-run)
step device 30 "$PY" benchmarks/gpu/device_info.py --json "$OUT/device.json" $DRYFLAG

# 3. every GPU test (CPU-only tests are CI's job); the dry run collects one small file only
if [ "$DRY" = 1 ]; then
  TESTS=(tests/test_telemetry.py)
else
  TESTS=(tests)
fi
step pytest-gpu 130 "$PY" -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors \
  -rs --timeout 120 --junitxml="$OUT/pytest-gpu.xml" "${TESTS[@]}"

# 4. every benchmark with its peer, on the GPU (tiny on the CPU in the dry run)
if [ "$DRY" = 1 ]; then
  TRAIN=(--quick --cases 2 --epochs 1 --roi 16 16 16 --init-filters 8 --threads 1)
  AGG=(--quick --sizes segresnet --ks 2 --repeats 1 --threads 1)
  TILES=(--quick --runs 1 --steps 1 --batch-size 4 --threads 1 --peer-workers 0)
  DEFACE=(--quick --repeats 1 --threads 1 --preset fast --image fedimg/assets/heads/pycortex.nii.gz)
else
  TRAIN=(--quick)
  AGG=(--path both --sizes segresnet --ks 16)  # i14b: the packed path's device-copy probe gives the GPU %
  DEFACE=(--quick)
  TILES=(--runs 5 --steps 10 --batch-size 64)  # 2 x 2 steps of 16 tiles was launch-bound on the H200
fi
step bench-train 150 "$PY" benchmarks/train_throughput.py "${TRAIN[@]}" --device "$DEV" --json "$OUT/train.json"
step bench-aggregate 40 "$PY" benchmarks/aggregate.py "${AGG[@]}" --device "$DEV" --json "$OUT/aggregate.json"
step bench-deface 40 "$PY" benchmarks/deface.py "${DEFACE[@]}" --device "$DEV" --json "$OUT/deface.json"
step bench-tiles 70 "$PY" benchmarks/tiles.py "${TILES[@]}" --device "$DEV" --json "$OUT/tiles.json"

[ "$PRINT" = 1 ] && exit 0
grep -E "[0-9]+ (passed|failed|error)" "$LOG" | tail -3 >>"$SUM"
echo "total $((SECONDS - T0))s" >>"$SUM"
cat "$SUM"
