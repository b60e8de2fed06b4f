# Two commands for a fresh machine: `make run` serves the default checkpoint, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two installs, each with its own stamp, both at the versions requirements.lock pins: `make run`
# needs only the serving dependencies; `make test` (and lint, train, evaluate) every extra. The full
# install also satisfies the base one, so `make run` after `make test` installs nothing.
LOCK := requirements.lock
BASE_STAMP := $(VENV)/.installed-base
DEV_STAMP := $(VENV)/.installed-dev
DEV_EXTRAS := test,train,export,deploy,lint

.PHONY: install install-dev run test test-fast lint lock train evaluate clean image-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BASE_STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e .
	touch $@

$(DEV_STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[$(DEV_EXTRAS)]'
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

# Regenerate requirements.lock, the one lock of every install (make install, make test, .ci/run, the
# Dockerfile): a fresh venv with the project and every extra, frozen without the project. torch keeps
# its release, not its build (2.13.0, not 2.13.0+cpu): the GPU image installs PyPI's CUDA build of it.
# Run it after changing pyproject.toml's dependencies (tests/test_lock.py fails until then); this header stays.
# Then scripts/lock_image.py appends the image's own section: what PyPI's CUDA torch pulls in (nvidia-*, cuda-*,
# triton), resolved against PyPI for the image's platform (needs PyPI; make image-check checks the image against it).
LOCK_VENV := build/lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[$(DEV_EXTRAS)]'
	{ sed -n '1,/^[^#]/{/^#/p}' $(LOCK); \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip==' \
	    | sed -E 's/^(torch==[^+]+)\+.*/\1/'; } > $(LOCK).new
	$(LOCK_VENV)/bin/python scripts/lock_image.py $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)

# Build the image (and the train target) with buildah, run it with podman and podman-compose, and check it
# (docs/deployment.md, "The image, built here"). As root; installs podman and buildah from Debian when missing.
image-check: install-dev
	$(BIN)/python scripts/image_check.py

train: install-dev
	$(BIN)/python -m model.training.photos prepare
	$(BIN)/python -m model.training.train synthetic --epochs 16 --steps-per-epoch 100 --val-size 128 --out runs/default

evaluate: install-dev
	$(BIN)/python -m model.training.evaluate pairs=../shared/data/real-pairs/pairs.tsv

clean:
	rm -rf $(VENV) runs .pytest_cache
