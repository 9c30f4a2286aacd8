# One environment (.venv), built on first use and reused until pyproject.toml or the lock changes.
# requirements.lock pins every package to the version the test suite last passed with; pyproject.toml
# keeps the ranges for people who install Quantlight into an environment of their own.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
CONFIG ?= configs/mnist_logistic.yaml
ARGS   ?=

.PHONY: fit test lint bench lock clean-env

fit: $(STAMP)  ## train CONFIG (default: MNIST logistic regression); extra CLI flags in ARGS
	$(PY) cli.py fit -c $(CONFIG) $(ARGS)

test: $(STAMP)  ## lint, then the whole test suite, a process per core, a test file to each (extra pytest flags in ARGS)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n auto --dist loadfile $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

BENCHMARKS := $(filter-out benchmarks/timing.py benchmarks/corpora.py benchmarks/fasttext_baseline.py,$(wildcard benchmarks/*.py))  # scripts, not their shared modules

bench: $(STAMP)  ## every benchmark script, printing figures and ratios (ARGS=--quick: each on tiny settings); fastText from the bench extra
	# One install at a time: installing the project rebuilds its native core, and two makes at once (a terminal and
	# a piped run of the documented commands) would swap its metadata under each other.
	flock $(VENV)/.install.lock $(PY) -m pip install -q -c $(LOCK) ".[bench]"
	for b in $(BENCHMARKS); do echo "== $$b"; $(PY) $$b $(ARGS) || exit 1; done

# Installing the project builds the native core (setup.py, optional: without a C compiler bundles run on ONNX Runtime).
NATIVE := setup.py $(wildcard runtime/native/*.c runtime/native/quantlight.h runtime/native/gen_unicode.py)

$(STAMP): pyproject.toml $(LOCK) $(NATIVE)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) ".[dev]"
	rm -rf build *.egg-info
	touch $(STAMP)

# Re-resolve: the newest versions pyproject.toml allows, in a scratch environment, written to the
# lock. torch and torchvision are named together so their wheels match. Then run `make test`.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q torch torchvision ".[dev,bench]"
	echo "# Exact versions the test suite passed with; make installs them. Re-resolve with: make lock" > $(LOCK)
	.venv-lock/bin/python -m pip freeze --exclude-editable | grep -v -i '^quantlight' >> $(LOCK)
	rm -rf .venv-lock build *.egg-info

clean-env:
	rm -rf $(VENV)
