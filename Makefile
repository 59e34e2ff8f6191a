# The two commands of the README: `make test` and `make demo`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Every pip call passes the constraints file: an unpinned torch resolves to a multi-GB CUDA build.
PIP := $(PY) -m pip install --disable-pip-version-check -c constraints.txt
# Tests, demo and benchmarks run single-threaded: stable figures on a busy 2-core machine.
THREADS := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1

.PHONY: install test test-fast demo bench lint clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(THREADS) $(PY) -m pytest

test-fast: install
	$(THREADS) $(PY) -m pytest -m 'not slow'

demo: install
	$(THREADS) $(VENV)/bin/probsparse demo

bench: install
	$(THREADS) $(PY) -m benchmarks all --quick

lint: install
	$(VENV)/bin/ruff check probsparse tests benchmarks tutorials

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache benchmarks/results
