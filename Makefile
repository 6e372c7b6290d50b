# `make run` and `make test` work on a fresh machine with Python 3.11 and nothing else.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint clean

run: $(VENV)/.installed
	$(BIN)/lepton quickstart

# The style is part of the tests: formatting, lint and types are checked before the suite runs.
test: lint
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff format --check lepton_ai tests benchmarks
	$(BIN)/ruff check lepton_ai tests benchmarks
	$(BIN)/mypy

# torch is pinned and installed first: it comes from the local wheel (CPU build) in
# seconds, and then `torch>=2.5` in pyproject is already satisfied.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
