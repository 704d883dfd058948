#!/usr/bin/env bash
# The GPU check on the borrowed host (Python 3.12 + torch, offline, 64 MiB carried per call,
# 10 min per command, only $OUT comes back), as one plan. Every command is in here.
#
# Here, with PyPI (once per lock):
#   bash bench/gpu_plan.sh pack            # .whl/slim (<= 8 MiB) and .whl/dali/part-N (<= 56 MiB)
# There, one call each, back to back (the machine keeps /tmp between calls while it is warm):
#   call 1, carry .whl/slim:         bash bench/gpu_plan.sh base       # every part but DALI's
#   call k, carry .whl/dali/part-K:  bash bench/gpu_plan.sh dali K     # installs part K; the
#                                    last part also runs the DALI features part and
#                                    the folder-mixture stage at 300k x 1500
# Variables: PYTHON (python3), SITE (/tmp/site: where wheels go, nothing of the host's Python is
# touched), OUT (results), CHECK_ARGS (extra gpu_check arguments, e.g. --dry-run in the replica).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
OUT=${OUT:-work/gpu-out}
DALI_STORE=${DALI_STORE:-/tmp/engine-dali}
WHL=${WHL:-.whl}  # where `pack` writes; the calls carry .whl/slim and .whl/dali/part-K
BASE_PARTS=cuda,trunk,train,screen,memory,pytest,features
BASE_LIMIT_S=330  # call 1 must end within 6 minutes, install included
platforms=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_25_x86_64
  manylinux_2_18_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux2010_x86_64
  manylinux_2_12_x86_64 manylinux1_x86_64 any)

download() {  # GROUP DIR: the group's wheels, at the recorded versions, checked against the lock
  local dir=$2
  rm -rf "$dir"; mkdir -p "$dir"
  python3 -m bench.gpu_pack names "$1" >"$dir/.names"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]/#/--platform=}" -d "$dir" -r "$dir/.names"
  rm "$dir/.names"
  python3 -m bench.gpu_pack verify "$1" "$dir"
}

pack() {
  download slim "$WHL/slim"
  download dali "$WHL/dali-wheels"
  rm -rf "$WHL/dali"
  python3 -m bench.gpu_pack split "$WHL/dali-wheels" "$WHL/dali"
  rm -rf "$WHL/dali-wheels"
  du -sh "$WHL/slim" "$WHL"/dali/part-*
}

install_wheels() {  # FILE...: into $SITE, no index, no dependency resolution, no bytecode
  [ "$#" -gt 0 ] || return 0
  # Into a folder of their own, then merged: `pip install --target` replaces a top-level
  # folder that is already there, so the nvidia/ of a later part would delete nvidia/dali.
  local stage
  stage=$(mktemp -d)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$stage" "$@"
  mkdir -p "$SITE"
  cp -a "$stage"/. "$SITE"/
  rm -rf "$stage"
  "$PYTHON" -m bench.gpu_pack namespace "$SITE"  # DALI's codecs must not hide the host's nvidia.*
  echo "installed $# wheel(s) into $SITE"
}

check() {  # OUTNAME PARTS: the check, unbuffered, its table and log under $OUT
  mkdir -p "$OUT"
  set +e
  PYTHONPATH="$PWD:$SITE" PYTHONUNBUFFERED=1 timeout "$BASE_LIMIT_S" "$PYTHON" -u -m bench.gpu_check \
    --parts "$2" --out "$OUT/$1.json" ${CHECK_ARGS:-} 2>&1 | tee "$OUT/$1.log"
  local rc=${PIPESTATUS[0]}
  set -e
  echo "gpu_check $2: exit $rc" | tee -a "$OUT/$1.log"
  return "$rc"
}

base() {
  install_wheels .whl/slim/*.whl
  "$PYTHON" -c 'import sys, torch; print(sys.version, torch.__version__)' >"$OUT/python.txt" 2>&1 || true
  nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
  check gpu_check_base "$BASE_PARTS"
}

dali() {  # K: keep part K beside the earlier ones, install what is whole, run at the last
  local k=$1 total
  mkdir -p "$DALI_STORE" "$OUT"
  if [ -d .whl/slim ] && [ ! -d "$SITE/zarr" ]; then  # a fresh machine: call 1's pack again
    install_wheels .whl/slim/*.whl
  fi
  cp .whl/dali/part-"$k"/* "$DALI_STORE"/
  total=$(cat "$DALI_STORE/PARTS")
  mapfile -t ready < <("$PYTHON" -m bench.gpu_pack join "$DALI_STORE")
  install_wheels "${ready[@]}"
  if [ "$k" = "$total" ]; then
    check gpu_check_dali cuda,dali,mixture
  else
    echo "part $k of $total kept in $DALI_STORE; carry part $((k + 1)) next"
  fi
}

case "${1:-}" in
  pack) pack ;;
  base) mkdir -p "$OUT"; base ;;
  dali) dali "${2:?part number}" ;;
  *) echo "usage: $0 pack | base | dali K" >&2; exit 2 ;;
esac
