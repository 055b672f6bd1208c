# sschsr: set-up, the two README commands, training entry points.
SHELL := /bin/bash
TORCH_VERSION ?= 2.13.0
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install demo test test-slow test-all lint train-stage1 train-stage2 train-full sweep-scales bench clean

install: $(STAMP)

# torch goes in first, pinned, so that nothing later resolves a (multi-GB) CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: install
	OMP_WAIT_POLICY=PASSIVE $(PY) -m sschsr.demo --out outputs/demo

test: install
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -m "not slow"

test-slow: install
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -m slow

test-all: install
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests experiments

train-stage1: install
	$(VENV)/bin/sschsr-train experiment=stage1 $(ARGS)

train-stage2: install
	$(VENV)/bin/sschsr-train experiment=stage2 $(ARGS)

train-full: install
	$(VENV)/bin/sschsr-train experiment=full $(ARGS)

sweep-scales: install
	$(VENV)/bin/sschsr-train -m experiment=full scale=4,8,16 $(ARGS)

bench: install
	$(PY) experiments/bench_data.py

clean:
	rm -rf outputs multirun .pytest_cache
