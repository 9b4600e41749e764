#!/usr/bin/env bash
# Fill .gpu/ (gitignored) with what the lent GPU image lacks, for benchmarks/gpu/run.sh.
# Run on the dev machine (it reaches PyPI), from anywhere in the repository:
#
#   bash benchmarks/gpu/make_wheels.sh [--budget-mib 60] [--no-nvvm] [--no-peers]
#
# Then call the device tool with carry [".gpu"] and `bash benchmarks/gpu/run.sh`.
#
# The image ('cuda', Python 3.12, torch cu130, CuPy, numba + numba-cuda, nvidia-ml-py, h5py...)
# lacks, in order of need:
#   1. monai, nibabel, openslide-python + openslide-bin (fedimg's own imports)   ~7.5 MiB
#   2. NVVM for numba CUDA: libnvvm.so + libdevice.10.bc from the `nvidia-nvvm` 13.0 wheel
#      (CUDA 13.0 = the image's driver 580; a newer NVVM emits PTX that driver refuses). The
#      wheel is 59 MiB (it also holds cicc, which numba does not use), so only those two files
#      travel, xz-compressed (~18.5 MiB), as .gpu/nvvm-<ver>.tar.xz; run.sh unpacks them into a
#      CUDA_HOME layout (nvvm/lib64, nvvm/libdevice) and uses it only when the image has no
#      libnvvm of its own.
#   3. torchstain (the tile benchmark's normalisation peer, 40 KB)
#   4. NVFlare (the aggregation peer, 3.5 MiB) + cryptography/cffi/pycparser (its aggregator
#      import needs cryptography; Flask, SQLAlchemy, docker... are not imported by it).
# Never carried: flwr (its requirements include `uv`, ~20 MiB, fastapi, uvicorn, alembic...)
# and SimpleITK (~50 MiB): those peers run on the CPU machine only.
#
# The device tool carries at most 64 MiB: the tracked and untracked-not-ignored files of the
# checkout plus .gpu/. Groups 2-4 are added only while the total stays under --budget-mib
# (default 60); what was skipped, and why, is printed and written to .gpu/manifest.txt.
# Also writes .gpu/commit.txt (HEAD + whether the tree is dirty): the tool does not carry .git.
set -euo pipefail

BUDGET_MIB=60
NVVM=1
PEERS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --budget-mib) BUDGET_MIB=$2; shift 2 ;;
    --no-nvvm) NVVM=0; shift ;;
    --no-peers) PEERS=0; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "make_wheels.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

ROOT=$(git rev-parse --show-toplevel)
cd "$ROOT"
PY=${PY:-}
if [ -z "$PY" ]; then
  for c in .venv/bin/python /work/main/.venv/bin/python python3; do
    if command -v "$c" >/dev/null 2>&1; then PY=$c; break; fi
  done
fi
DEST=.gpu
WHEELS=$DEST/wheels
TMP=$DEST/tmp
mkdir -p "$WHEELS" "$TMP"
MANIFEST=$DEST/manifest.txt
: >"$MANIFEST"
note() { echo "$*" | tee -a "$MANIFEST"; }

# Versions: the ones installed here (what CI tests), else the pinned fallback.
ver() {  # ver DIST FALLBACK
  "$PY" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except Exception: print(sys.argv[2])" "$1" "$2"
}
download() {  # download SPEC... (cp312 manylinux wheels, no dependencies)
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 \
    --platform manylinux_2_34_x86_64 --platform any -d "$1" "${@:2}" 2>&1 | grep -v "is ignored" || true
}
bytes_of() { du -sb "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
tree_bytes() {  # what the device tool carries besides .gpu/
  git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null \
    | awk '{s += $1} END {print s + 0}'
}
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
fits() {  # fits EXTRA_BYTES: would the tree + .gpu + EXTRA stay under the budget?
  local total=$(( TREE + $(bytes_of "$WHEELS" "$DEST"/nvvm-*.tar.xz) + $1 ))
  [ "$total" -le $(( BUDGET_MIB * 1048576 )) ]
}

TREE=$(tree_bytes)
note "checkout (tracked + untracked files the tool carries): $(mib "$TREE") MiB; budget $BUDGET_MIB MiB"

# 1. fedimg's own imports (always)
download "$WHEELS" "monai==$(ver monai 1.6.1)" "nibabel==$(ver nibabel 5.4.2)" \
  "openslide-python==$(ver openslide-python 1.4.7)" "openslide-bin==$(ver openslide-bin 4.0.1.2)"
note "carried: monai, nibabel, openslide-python, openslide-bin"

# 2. NVVM for numba CUDA
NVVM_VER=13.0.88
NVVM_TAR=$DEST/nvvm-$NVVM_VER.tar.xz
if [ "$NVVM" = 1 ]; then
  if [ ! -s "$NVVM_TAR" ]; then
    download "$TMP" "nvidia-nvvm==$NVVM_VER"
    rm -rf "$TMP/x" && mkdir -p "$TMP/x/nvvm/lib64" "$TMP/x/nvvm/libdevice"
    "$PY" - "$TMP" <<'EOF'
import glob, shutil, sys, zipfile
tmp = sys.argv[1]
whl = glob.glob(f"{tmp}/nvidia_nvvm-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    for src, dst in (("nvidia/cu13/lib/libnvvm.so.4", "nvvm/lib64/libnvvm.so.4"),
                     ("nvidia/cu13/nvvm/libdevice/libdevice.10.bc", "nvvm/libdevice/libdevice.10.bc")):
        with z.open(src) as f, open(f"{tmp}/x/{dst}", "wb") as g:
            shutil.copyfileobj(f, g)
EOF
    ln -sf libnvvm.so.4 "$TMP/x/nvvm/lib64/libnvvm.so"
    echo "nvidia-nvvm $NVVM_VER (libnvvm.so.4, libdevice.10.bc only)" >"$TMP/x/nvvm/VERSION"
    XZ_OPT="-9 -T0" tar -C "$TMP/x" -cJf "$NVVM_TAR.part" nvvm && mv "$NVVM_TAR.part" "$NVVM_TAR"
  fi
  if fits 0; then
    note "carried: NVVM $NVVM_VER for numba CUDA ($(mib "$(bytes_of "$NVVM_TAR")") MiB, $NVVM_TAR)"
  else
    rm -f "$NVVM_TAR"; note "skipped: NVVM (over the $BUDGET_MIB MiB budget; numba-CUDA tests then run only if the image has its own libnvvm)"
  fi
else
  rm -f "$DEST"/nvvm-*.tar.xz; note "skipped: NVVM (--no-nvvm)"
fi

# 3-4. peers, each only if it fits
add_group() {  # add_group NAME SPEC...
  local name=$1; shift
  rm -rf "$TMP/g" && mkdir -p "$TMP/g"
  download "$TMP/g" "$@"
  local size; size=$(bytes_of "$TMP/g")
  if fits "$size"; then
    mv "$TMP"/g/*.whl "$WHEELS"/; note "carried: $name ($(mib "$size") MiB)"
  else
    note "skipped: $name ($(mib "$size") MiB would pass the $BUDGET_MIB MiB budget)"
  fi
}
if [ "$PEERS" = 1 ]; then
  add_group "torchstain (tile normalisation peer)" "torchstain==$(ver torchstain 1.4.1)"
  add_group "NVFlare + cryptography, cffi, pycparser (aggregation peer)" "nvflare==$(ver nvflare 2.9.0)" \
    "cryptography==$(ver cryptography 46.0.3)" "cffi==$(ver cffi 2.0.0)" "pycparser==$(ver pycparser 2.23)"
else
  note "skipped: torchstain, NVFlare (--no-peers)"
fi
note "skipped: flwr (requires uv ~20 MiB, fastapi, uvicorn, alembic...), SimpleITK (~50 MiB): CPU machine only"
rm -rf "$TMP"

DIRTY=$(git status --porcelain --untracked-files=no | head -c1)
{ git rev-parse HEAD; [ -n "$DIRTY" ] && echo dirty || echo clean; } >"$DEST/commit.txt"
GPU_BYTES=$(bytes_of "$DEST")
note "commit: $(tr '\n' ' ' <"$DEST/commit.txt")"
note ".gpu/: $(mib "$GPU_BYTES") MiB; with the checkout: $(mib $(( GPU_BYTES + TREE ))) MiB of the tool's 64 MiB"
ls -la "$WHEELS" "$DEST"
