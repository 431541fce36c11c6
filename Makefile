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
# hf-eager and vLLM, from the best profile in the repository so far (twelve bins measured on an
# H100 by issue 4's sweep, docs/measurements.md; requests past its edges charged at the last).
PROFILE := docs/measurements/2026-11-26-h100-sweep-paper-bins-12/infergy.db

run: $(VENV)/.base
	$(BIN)/infergy env
	$(BIN)/infergy estimate --trace azure-code-2023 --model llama-3.1-8b \
		--engine hf-eager,vllm --profile $(PROFILE) \
		--input-edges 32,128,512,2048 --output-edges 8,32,128 --beyond clamp
	$(BIN)/infergy report --db $(PROFILE) --trace azure-code-2023 --out report

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
