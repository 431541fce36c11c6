# The two commands of the README: `make run` and `make test`. Each sets itself up on a fresh
# machine (a virtual environment in .venv) and then does its job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint clean chromium

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

# The main job on built-in defaults: the built-in Azure trace estimated for llama-3.1-8b on
# every engine from the profiles shipped in the package (src/infergy/profile/shipped/, issue 7), a
# table for each of the two cards (--gpu h100,h200: a card without a store, MODEL-CARD.db,
# is a line saying so; its table appears when the store lands), with the savings over
# hf-eager and the theoretical baseline; an engine not yet measured in every bin the trace
# needs is a row saying so. Then the HTML report of every
# shipped store of llama-3.1-8b (the glob below: the H100's today, the H200's when it lands),
# each card in sections, figures and estimate tables of its own, none holding two cards.
PROFILES := $(wildcard src/infergy/profile/shipped/llama-3.1-8b-*.db)

run: $(VENV)/.base
	$(BIN)/infergy env
	$(BIN)/infergy estimate --trace azure-code-2023 --model llama-3.1-8b --gpu h100,h200 \
		--engine hf-eager,hf-compiled,vllm,vllm-eager
	$(BIN)/infergy report $(addprefix --db ,$(PROFILES)) --trace azure-code-2023 --out report

lint: $(VENV)/.test
	$(BIN)/ruff check src tests benchmarks examples

# The report's browser test needs Chromium: the Debian package, installed where missing and
# possible (root, apt); where it cannot be, that one test is skipped and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && \
	        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	  echo "make: Chromium could not be installed; the report's browser test will be skipped"

test: lint chromium
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
