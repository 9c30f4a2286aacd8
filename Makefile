# One environment (.venv), built on first use and reused until pyproject.toml changes.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= configs/mnist_logistic.yaml
ARGS   ?=

.PHONY: fit test lint bench clean-env

fit: $(STAMP)  ## train CONFIG (default: MNIST logistic regression); extra CLI flags in ARGS
	$(PY) cli.py fit -c $(CONFIG) $(ARGS)

test: $(STAMP)  ## lint, then the whole test suite (extra pytest flags in ARGS)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)  ## every benchmark script, printing figures and ratios
	for b in benchmarks/*.py; do $(PY) $$b $(ARGS) || exit 1; done

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch pinned to the release whose torchvision wheel matches it
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q ".[dev]"
	rm -rf build *.egg-info
	touch $(STAMP)

clean-env:
	rm -rf $(VENV)
