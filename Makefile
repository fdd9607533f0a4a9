# Two commands do everything on a fresh machine of this kind (Debian, Python 3.11, CPU):
#   make demo   set up, then run the demo (a small real ablation sweep + figures)
#   make test   set up, then run the default test suite (SLURM and PostgreSQL included)
# Set-up is idempotent: a second call checks a few stamps and starts in seconds.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The local CPU wheel on this kind of machine; cluster users install their own build
# (environment.yml). Override e.g. `make test TORCH=torch` elsewhere.
TORCH ?= torch==2.13.0
DEB_PACKAGES := slurm-wlm munge iproute2 dataset-fashion-mnist postgresql chromium
PYTEST_ARGS ?=

.PHONY: setup debian test test-slow demo bench bench-packing lint clean-venv

setup: debian $(VENV)/.installed

# Debian packages: installed with apt-get when missing (needs root), else a clear message.
debian:
	@missing=$$(for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" != 0 ]; then \
	        echo "missing Debian packages: $$missing; run: sudo apt-get install -y $$missing" >&2; exit 1; fi; \
	    echo "installing Debian packages: $$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev,bench]"
	touch $@

# `gpu` tests need CUDA (CI has none): deselected here, not skipped; the dry mode of
# benchmarks/gpu-check.sh runs them on the CPU inside the default suite.
# pytest exits 5 when it collected no test: for this suite that is a broken selection or
# collection, so it fails loudly instead of passing silently.
test: setup
	@$(BIN)/pytest -m "not slow and not gpu" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; check tests/ and -m" >&2; fi; \
	exit $$rc

test-slow: setup $(VENV)/.installed-bench
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

demo: setup
	$(BIN)/perceiver-ablate demo

bench: setup $(VENV)/.installed-bench
	$(BIN)/python benchmarks/run.py

bench-packing: setup
	$(BIN)/python benchmarks/packing.py

lint: setup
	$(BIN)/ruff check perceiver_core experiments analysis tests benchmarks

clean-venv:
	rm -rf $(VENV)
