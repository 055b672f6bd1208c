# sschsr: set-up, the two README commands, training entry points.
SHELL := /bin/bash
TORCH_VERSION ?= 2.13.0
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
SCALE ?= 4
SCALES ?= 4,8,16
SEEDS ?= 1,2,3
FROM ?=

.PHONY: install demo test test-slow test-all lint train-stage1 train-stage2 train-full train-all sweep-scales ablations bench clean

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

# the three stages in order at SCALE, in one run folder (outputs/chain/runs/<date>/{stage1,stage2,full})
train-all: install
	$(VENV)/bin/sschsr-train experiment=chain scale=$(SCALE) $(ARGS)

# one multirun, a chain per scale; summary.csv, summary.md, metrics_vs_scale.png in its folder
sweep-scales: install
	$(VENV)/bin/sschsr-train -m experiment=chain scale=$(SCALES) $(ARGS)

# the full network and the paper's three ablations per seed, on the newest stage-2 run at SCALE (or FROM=<run dir>);
# experiment=full unless ARGS names another (ARGS="experiment=paper": the paper's network)
ablations: install
	$(VENV)/bin/sschsr-train -m $(if $(filter experiment=%,$(ARGS)),,experiment=full) scale=$(SCALE) seed=$(SEEDS) \
		ablation=full,no_warpnet,no_iterative,no_rmca $(if $(FROM),chain_from=$(FROM)) $(ARGS)

bench: install
	$(PY) experiments/bench_data.py

clean:
	rm -rf outputs multirun .pytest_cache
