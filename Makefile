# Single entry point. `make setup` once per machine (idempotent, fast the second
# time), then `make test`. `make cluster` starts the local control plane by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup venv binaries cluster test lint typecheck unit integration bench clean

setup: venv binaries

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade-strategy only-if-needed -e '.[operator,trainer,dev]'
	rm -f $(VENV)/.installed-* && touch $@

binaries: venv
	$(BIN)/tunegate-cluster build

cluster: setup
	$(BIN)/tunegate-cluster up

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit -q

# The full suite: static checks, unit tests, then tests against the local cluster.
test: lint typecheck
	$(BIN)/pytest -q

bench: venv
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .tunegate .mypy_cache .ruff_cache .pytest_cache
