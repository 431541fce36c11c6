# The two commands of the README: `make run` and `make test`. Each sets itself up on a fresh
# machine (a virtual environment in .venv) and then does its job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Estimating and metering need no torch: `make run` installs the base package only.
$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

# Tests install the `measure` extra with the CPU build of torch and the GPU machines'
# transformers (pinned in constraints/test.txt), plus pytest and ruff.
$(VENV)/.test: pyproject.toml constraints/test.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints/test.txt -e '.[measure,test]'
	touch $@

run: $(VENV)/.base
	$(BIN)/infergy env
	$(BIN)/infergy meter --idle-s 1 -- $(BIN)/python examples/cpu_work.py

lint: $(VENV)/.test
	$(BIN)/ruff check src tests benchmarks examples

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
