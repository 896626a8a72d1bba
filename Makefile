# The set-up commands of a fresh clone. Each installs into .venv first, and only when pyproject.toml or
# constraints.txt changed since the last install.
#   make quickstart   train the quickstart U-Net on the embedded dataset (runs/quickstart)
#   make test         formatting and lint checks, then the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
INSTALLED = $(VENV)/.installed

.PHONY: install quickstart test lint format constraints

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(INSTALLED)

quickstart: $(INSTALLED)
	$(BIN)/segjax-train --config=configs/quickstart.py --workdir=runs/quickstart

lint: $(INSTALLED)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest tests -n 2

format: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

constraints: $(INSTALLED)
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
