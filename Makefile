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
# torch's own build index per CUDA major version (cu128 runs on every 12.x driver); set one
# empty to take the registry's default torch instead.
TORCH_INDEX_12 ?= https://download.pytorch.org/whl/cu128
TORCH_INDEX_13 ?= https://download.pytorch.org/whl/cu130
DALI_EXTRA := dali-cuda$(or $(CUDA),13)
# Which variant the venv holds: changing CUDA= reinstalls.
STAMP := $(VENV)/.setup-cuda-$(or $(CUDA),default)

.PHONY: setup test test-all lint bench demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@if ls $(VENV)/.setup-cuda-* 2>/dev/null | grep -qvx '$(STAMP)'; then \
		echo "$(VENV) holds another CUDA variant: recreating it"; rm -rf $(VENV); fi
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
ifneq ($(TORCH_INDEX_$(CUDA)),)
	$(BIN)/pip install -q --index-url $(TORCH_INDEX_$(CUDA)) torch torchvision
endif
	$(BIN)/pip install -q -e '.[dev,$(DALI_EXTRA)]'
	@rm -f $(VENV)/.setup-cuda-*
	@touch $@

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
