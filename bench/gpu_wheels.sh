#!/usr/bin/env bash
# Wheels an offline GPU host (Python 3.12, x86-64, CUDA 13; torch, torchvision, timm, click,
# numpy and pillow already there) needs for `python -m bench.gpu_check`, in two groups: `base`
# (~45 MB, one transfer) runs every part but the features pass; `dali` (~300 MB, in 56 MiB
# parts for transfers of limited size) adds DALI for it.
#   bash bench/gpu_wheels.sh base .whl/base        # here, with network
#   bash bench/gpu_wheels.sh dali .whl/dali
#   bash bench/gpu_wheels.sh install .whl/base [.whl/dali]   # there: into /tmp/site
#   export PYTHONPATH=$PWD:/tmp/site
set -euo pipefail
base=(open_clip_torch ftfy wcwidth regex webdataset braceexpand zarr numcodecs donfig
      google-crc32c faiss-cpu tqdm matplotlib contourpy cycler fonttools kiwisolver pyparsing
      pytest pluggy iniconfig)
dali=(nvidia-dali-cuda130 nvidia-nvimgcodec-cu13 nvidia-libnvcomp-cu13==5.3.0.16 nvidia-nvjpeg
      nvidia-nvjpeg2k-cu13 nvidia-nvtiff-cu13 astunparse gast optree nvtx makefun "libcst~=1.8")
platforms=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 any)

download() {  # GROUP OUT: wheels of GROUP for the host's Python, no dependency resolution
  local out=$2 tmp
  local -n pkgs=$1
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]/#/--platform=}" -d "$tmp" "${pkgs[@]}"
  rm -rf "$out"; mkdir -p "$out"
  tar -C "$tmp" -cf - . | split -b 56M - "$out/part."
  rm -rf "$tmp"
  ls -la "$out"; du -sh "$out"
}

install() {  # DIR...: join each DIR's parts, install every wheel into /tmp/site
  local w
  w=$(mktemp -d)
  for d in "$@"; do cat "$d"/part.* | tar -C "$w" -xf -; done
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$w"/*.whl
  echo "installed $(ls "$w"/*.whl | wc -l) wheels into /tmp/site"
}

case "${1:-}" in
  base) download base "${2:-.whl/base}" ;;
  dali) download dali "${2:-.whl/dali}" ;;
  install) shift; install "$@" ;;
  *) echo "usage: $0 base|dali OUT  or  $0 install DIR [DIR...]" >&2; exit 2 ;;
esac
