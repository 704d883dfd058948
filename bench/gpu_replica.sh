#!/usr/bin/env bash
# A replica of the GPU host, checked automatically (CI runs it): a clean Python 3.12 holding only
# the host's packages (requirements/gpu-host.txt: torch 2.11 CUDA build, torchvision 0.26, ...),
# then every call of bench/gpu_plan.sh as on the host, its checks as dry runs: call 1 (the slim
# pack; every part but DALI's), then one call per DALI part (the last runs the DALI part), and
# the collection of the gpu-marked tests. Fails where the host would fail to install or import.
#
# The host venv and the packs are cached under $REPLICA_CACHE (keyed by the files that define
# them); a fresh machine pays for the venv (torch 2.11's CUDA wheels from PyPI) and the packs
# (~25 s): see bench/RESULTS.md for the measured times.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${REPLICA_CACHE:-$HOME/.cache/engine-gpu-replica}
find_py312() {  # pyenv's 3.12 (these machines have one), else a python3.12 that runs
  local p
  for p in "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python "$(command -v python3.12)"; do
    [ -x "$p" ] && "$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null &&
      { echo "$p"; return; }
  done
}
py312=${PY312:-$(find_py312)}
[ -n "$py312" ] || { echo "no Python 3.12 found (set PY312)" >&2; exit 1; }
start=$(date +%s)
key=$(cat requirements/gpu-host.txt | sha256sum | cut -c1-12)
venv=$cache/host-$key
if [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  "$py312" -m venv "$venv"
  "$venv/bin/pip" install -q --progress-bar off -r requirements/gpu-host.txt
  touch "$venv/.complete"
fi
echo "replica venv: $venv ($(( $(date +%s) - start )) s)"
pack_key=$(cat requirements/wheels-py312.tsv bench/gpu_pack.py | sha256sum | cut -c1-12)
packs=$cache/packs-$pack_key
if [ ! -f "$packs/.complete" ]; then  # `gpu_plan.sh pack`, as here before a lease (PyPI)
  rm -rf "$packs"
  WHL="$packs" bash bench/gpu_plan.sh pack
  touch "$packs/.complete"
fi
# The host's working copy: the repository's tracked files (what a call carries) and the pack.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git ls-files -z | xargs -0 cp --parents -t "$work" 2>/dev/null || cp -r . "$work"
mkdir -p "$work/.whl" && cp -r "$packs/slim" "$packs/dali" "$work/.whl/"
cd "$work"
export PYTHON="$venv/bin/python" SITE="$work/site" OUT="$work/out" PYTHONNOUSERSITE=1
export CHECK_ARGS="--dry-run" OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} DALI_STORE="$work/dali-store"
bash bench/gpu_plan.sh base  # call 1
# The gpu-marked tests must collect with call 1's packages alone (no DALI, no wds2idx yet).
files=$(PYTHONPATH="$work:$SITE" "$PYTHON" -c \
  'from bench.gpu_check_parts import gpu_test_files; print(" ".join(gpu_test_files()))')
PYTHONPATH="$work:$SITE" "$PYTHON" -m pytest -q -p no:cacheprovider --collect-only -m gpu $files \
  >"$OUT/collect.txt" 2>&1 || { cat "$OUT/collect.txt"; echo "gpu tests: collection failed" >&2; exit 1; }
tail -n 1 "$OUT/collect.txt"
grep -Eq '^[0-9]+(/[0-9]+)? tests? (collected|selected)' "$OUT/collect.txt" ||
  { echo "gpu tests: nothing collected" >&2; exit 1; }
parts=$(cat .whl/dali/part-1/PARTS)
for k in $(seq 1 "$parts"); do  # calls 2.., each with one part; the last runs the DALI part
  bash bench/gpu_plan.sh dali "$k"
done
mkdir -p "$repo/work"
cp "$OUT"/gpu_check_*.json "$repo/work/"
echo "replica passed in $(( $(date +%s) - start )) s: $(PYTHONPATH="$SITE" "$PYTHON" -c \
  'import sys, torch, zarr, open_clip, nvidia.dali as d; print("Python", sys.version.split()[0],
   "torch", torch.__version__, "zarr", zarr.__version__, "open_clip", open_clip.__version__,
   "DALI", d.__version__)')"
