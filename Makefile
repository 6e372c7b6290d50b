# `make run` and `make test` work on a fresh machine with Python 3.11 and nothing else.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test clean

run: $(VENV)/.installed
	$(BIN)/lepton quickstart

test: $(VENV)/.installed
	$(BIN)/python -m pytest

# torch is pinned and installed first: it comes from the local wheel (CPU build) in
# seconds, and then `torch>=2.5` in pyproject is already satisfied.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
