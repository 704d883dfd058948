#!/usr/bin/env bash
# A replica of the GPU host, checked automatically (CI runs it): a clean Python 3.12 holding only
# the host's packages (requirements/gpu-host.txt: torch 2.11 CUDA build, torchvision 0.26, ...),
# the slim pack installed by bench/gpu_plan.sh exactly as on the host, then call 1's check as a
# dry run and the collection of the gpu-marked tests. Fails if the host would fail to import.
#
# The host venv and the slim pack are cached under $REPLICA_CACHE (keyed by the files that
# define them); a fresh machine pays ~70 s for the venv (torch 2.11's CUDA wheels from PyPI,
# measured on a 2-core CI machine) and ~5 s for the pack.
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
slim_key=$(grep -P '\tslim\t' requirements/wheels-py312.tsv | sha256sum | cut -c1-12)
slim=$cache/slim-$slim_key
if [ ! -f "$slim/.complete" ]; then
  rm -rf "$slim"; mkdir -p "$slim"
  python3 -m bench.gpu_pack names slim >"$slim/names.txt"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$slim" -r "$slim/names.txt"
  python3 -m bench.gpu_pack verify slim "$slim"
  touch "$slim/.complete"
fi
# The host's working copy: the repository's tracked files (what a call carries) and the pack.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git ls-files -z | xargs -0 cp --parents -t "$work" 2>/dev/null || cp -r . "$work"
mkdir -p "$work/.whl/slim" && cp "$slim"/*.whl "$work/.whl/slim/"
cd "$work"
export PYTHON="$venv/bin/python" SITE="$work/site" OUT="$work/out" PYTHONNOUSERSITE=1
export CHECK_ARGS="--dry-run" OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
bash bench/gpu_plan.sh base
files=$(PYTHONPATH="$work:$SITE" "$PYTHON" -c \
  'from bench.gpu_check_parts import gpu_test_files; print(" ".join(gpu_test_files()))')
PYTHONPATH="$work:$SITE" "$PYTHON" -m pytest -q -p no:cacheprovider --collect-only -m gpu $files \
  >"$OUT/collect.txt" 2>&1 || { cat "$OUT/collect.txt"; echo "gpu tests: collection failed" >&2; exit 1; }
tail -n 1 "$OUT/collect.txt"
grep -Eq '^[0-9]+(/[0-9]+)? tests? (collected|selected)' "$OUT/collect.txt" ||
  { echo "gpu tests: nothing collected" >&2; exit 1; }
mkdir -p "$repo/work"
cp "$OUT/gpu_check_base.json" "$repo/work/gpu_replica.json"
echo "replica passed in $(( $(date +%s) - start )) s: $(PYTHONPATH="$SITE" "$PYTHON" -c \
  'import sys, torch, zarr, open_clip; print("Python", sys.version.split()[0], "torch", torch.__version__, "zarr", zarr.__version__, "open_clip", open_clip.__version__)')"
