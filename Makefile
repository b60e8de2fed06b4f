# Two commands for a fresh machine: `make run` serves the default checkpoint, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two installs, each with its own stamp: `make run` needs only the serving dependencies;
# `make test` (and lint, train, evaluate) everything. The full install also satisfies the
# base one, so `make run` after `make test` installs nothing.
BASE_STAMP := $(VENV)/.installed-base
DEV_STAMP := $(VENV)/.installed-dev
DEV_EXTRAS := test,train,export,deploy,lint

.PHONY: install install-dev run test test-fast lint constraints train evaluate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BASE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$(DEV_EXTRAS)]'
	touch $@ $(BASE_STAMP)

install: $(BASE_STAMP)

install-dev: $(DEV_STAMP)

run: install
	$(BIN)/python -m app

test: install-dev
	$(BIN)/python -m pytest

# The quick subset: no server processes, training, browser (see the markers in pyproject.toml).
test-fast: install-dev
	$(BIN)/python -m pytest -m "not slow and not browser"

# ruff (lint and format) on everything; mypy on the serving core (app/, model/ without model/training/).
lint: install-dev
	$(BIN)/ruff check app model bench tests scripts
	$(BIN)/ruff format --check app model bench tests scripts
	$(BIN)/mypy

# Regenerate constraints.txt, the Docker image's pins: a fresh venv with the serving dependencies only,
# frozen without the project and torch (the Dockerfile installs its CUDA build first).
CONSTRAINTS_VENV := build/constraints-venv
constraints:
	rm -rf $(CONSTRAINTS_VENV)
	$(PYTHON) -m venv $(CONSTRAINTS_VENV)
	$(CONSTRAINTS_VENV)/bin/python -m pip install --quiet -e .
	{ sed -n '/^#/p' constraints.txt; \
	  $(CONSTRAINTS_VENV)/bin/python -m pip freeze --exclude-editable --exclude torch; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(CONSTRAINTS_VENV)

train: install-dev
	$(BIN)/python -m model.training.photos prepare
	$(BIN)/python -m model.training.train synthetic --epochs 16 --steps-per-epoch 100 --val-size 128 --out runs/default

evaluate: install-dev
	$(BIN)/python -m model.training.evaluate pairs=../shared/data/real-pairs/pairs.tsv

clean:
	rm -rf $(VENV) runs .pytest_cache
