# The set-up commands of a fresh clone. Each installs into .venv first, and only when pyproject.toml or
# constraints.txt changed since the last install, or when .venv was made by another Python than $(PYTHON).
#   make quickstart   train the quickstart U-Net on the embedded dataset (runs/quickstart)
#   make test         formatting and lint checks, then the test suite (what CI runs)
PYTHON ?= python3.12
VENV ?= .venv
BIN = $(VENV)/bin
INSTALLED = $(VENV)/.installed
# pyenv's python3.X shim runs only where 3.X is one of pyenv's selected versions (a machine whose global pyenv
# version is 3.11 still has a 3.12): select it first for the commands that run $(PYTHON) itself. No effect where
# $(PYTHON) is not a pyenv shim.
PYENV_PICK = $(patsubst python%,%,$(filter python3.%,$(notdir $(PYTHON))))
RUN_PYTHON = $(if $(PYENV_PICK),PYENV_VERSION=$(PYENV_PICK)$${PYENV_VERSION:+:$$PYENV_VERSION} )$(PYTHON)
# Which interpreter a Python is (version and installation): a .venv whose python differs from $(PYTHON) (one made
# by an older Makefile with Python 3.11, say) is made again, whatever the stamp's age.
WHICH_PYTHON = import sys; print(sys.version.split()[0], sys.base_prefix)

ifneq ($(shell $(BIN)/python -c '$(WHICH_PYTHON)' 2>/dev/null),$(shell $(RUN_PYTHON) -c '$(WHICH_PYTHON)' 2>/dev/null))
$(INSTALLED): FORCE
endif

.PHONY: install quickstart test lint format constraints FORCE

$(INSTALLED): pyproject.toml constraints.txt
	@want="$$($(RUN_PYTHON) -c '$(WHICH_PYTHON)')" || { echo "make: $(PYTHON) does not run: install Python 3.12, or name another with make PYTHON=..."; exit 2; }; \
	if [ -f $(VENV)/pyvenv.cfg ] && [ "$$($(BIN)/python -c '$(WHICH_PYTHON)' 2>/dev/null)" != "$$want" ]; then \
		echo "make: $(VENV) was made by another Python than $(PYTHON) ($$want): making it again"; rm -rf $(VENV); fi
	$(RUN_PYTHON) -m venv $(VENV)
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

FORCE:
