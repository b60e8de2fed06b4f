# Two commands for a fresh machine: `make run` serves the default checkpoint, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test train evaluate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,train,deploy]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m app

test: install
	$(BIN)/python -m pytest

train: install
	$(BIN)/python -m model.sources prepare
	$(BIN)/python -m model.train synthetic --epochs 16 --steps-per-epoch 100 --val-size 128 --out runs/default

evaluate: install
	$(BIN)/python -m model.evaluate pairs=../shared/data/real-pairs/pairs.tsv

clean:
	rm -rf $(VENV) runs .pytest_cache
