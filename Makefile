# Two commands on a fresh machine: `make setup` then `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Tests see no GPU and no network; keep their thread count to the CI machine's 2 cores.
export OMP_NUM_THREADS ?= 2

.PHONY: setup test test-all lint bench demo clean

setup: $(BIN)/engine

$(BIN)/engine: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
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
