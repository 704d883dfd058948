# Two commands on a fresh machine: `make setup` then `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Tests see no GPU and no network; keep their thread count to the CI machine's 2 cores.
export OMP_NUM_THREADS ?= 2

# CUDA=12 or 13: torch and DALI built for that CUDA major version (a wheel for a newer CUDA
# than the driver's sees no GPU). Default: the driver's version from nvidia-smi (14+ runs 13's
# builds); with no nvidia-smi, none: the registry's default torch and DALI for CUDA 13, which
# also run on the CPU (what CI installs).
DRIVER_CUDA := $(shell nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\)\..*/\1/p' | head -n 1)
AUTO_CUDA := $(shell [ -n "$(DRIVER_CUDA)" ] && { [ "$(DRIVER_CUDA)" -ge 13 ] && echo 13 || echo $(DRIVER_CUDA); })
CUDA ?= $(AUTO_CUDA)
# An unrelated CUDA variable in the environment (a path, say) is not a choice of build.
ifeq ($(origin CUDA),environment)
ifeq ($(filter 12 13,$(CUDA)),)
CUDA := $(AUTO_CUDA)
endif
endif
ifneq ($(filter-out 12 13,$(CUDA)),)
$(error CUDA=$(CUDA): this project installs builds for CUDA=12 or CUDA=13 (a driver older than CUDA 12 needs an update))
endif
# Exact versions, hashes included, per Python (3.11, 3.12) and CUDA variant (requirements/):
# `make lock` regenerates them from PyPI, `make setup` installs from them. CUDA 13 and the
# default (no driver, CI) share one lock: PyPI's torch for Linux is the CUDA 13 build, which also
# runs on the CPU. CUDA 12 takes torch and torchvision from torch's own cu128 index (not PyPI),
# at the locked version; the rest of its lock has no torch.
PYV := $(shell $(PY) -c 'import sys; print("%d%d" % sys.version_info[:2])' 2>/dev/null)
LOCK_CUDA := $(if $(filter 12,$(CUDA)),12,13)
LOCK := requirements/lock-py$(PYV)-cu$(LOCK_CUDA).txt
TORCH_PIN := $(shell sed -n 's/^\(torch\(vision\)\{0,1\}==[^ ]*\).*/\1/p' requirements/constraints.txt)
TORCH_INDEX_12 ?= https://download.pytorch.org/whl/cu128

# Which variant the venv holds: changing CUDA= reinstalls.
STAMP := $(VENV)/.setup-cuda-$(or $(CUDA),default)
UV_VERSION := 0.13.9
LOCK_PYTHONS := 3.11 3.12

.PHONY: setup lock replica test test-all lint bench demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@if ls $(VENV)/.setup-cuda-* 2>/dev/null | grep -qvx '$(STAMP)'; then \
		echo "$(VENV) holds another CUDA variant: recreating it"; rm -rf $(VENV); fi
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
ifeq ($(LOCK_CUDA),12)
	$(BIN)/pip install -q --index-url $(TORCH_INDEX_12) $(TORCH_PIN)
endif
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	@rm -f $(VENV)/.setup-cuda-*
	@touch $@

$(LOCK):
	@echo "no lock for Python $(PYV) (CUDA $(LOCK_CUDA)): this project supports Python 3.11 and 3.12 ($(PY) is $(PYV)); run make lock for another" >&2; exit 1

# Every lock, from PyPI (needs network; uv resolves for a Python and platform other than this
# machine's), then the GPU host's wheel record (bench/gpu_pack.py: names, sizes, hashes).
lock:
	$(PY) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install -q uv==$(UV_VERSION) packaging
	for py in $(LOCK_PYTHONS); do v=$$(echo $$py | tr -d .); \
	  common="--python-version $$py --python-platform x86_64-manylinux_2_28 --generate-hashes -q -c requirements/constraints.txt"; \
	  $(VENV)-lock/bin/uv pip compile pyproject.toml --extra dev --extra dali-cuda13 $$common \
	    -o requirements/lock-py$$v-cu13.txt || exit 1; \
	  $(VENV)-lock/bin/uv pip compile pyproject.toml --extra dev --extra dali-cuda12 $$common \
	    --override requirements/no-torch.txt -o requirements/lock-py$$v-cu12.txt || exit 1; \
	done
	$(VENV)-lock/bin/uv pip compile pyproject.toml --python-version 3.12 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes -q \
	  -c requirements/lock-py312-cu13.txt -o requirements/runtime-py312.txt
	$(VENV)-lock/bin/python -m bench.gpu_pack record

# The GPU host's Python 3.12 and packages with the slim pack installed as the README says;
# gpu_check --dry-run and the gpu tests' collection must pass there (bench/gpu_replica.sh).
replica:
	bash bench/gpu_replica.sh

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest -q -m "not slow and not gpu"

test-all: lint
	$(BIN)/pytest -q

bench:
	$(BIN)/engine bench

demo:
	$(BIN)/engine demo

clean:
	rm -rf work .pytest_cache .ruff_cache
