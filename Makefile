# raw2logit — `make help` lists the targets.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-kernels test-all lint format bench run data report clean

help:  ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install raw2logit with its dev tools

# The ISP parity tests again with torch forced to its lowest and to AVX2 kernels (ATen, oneDNN, MKL),
# so a test that holds on one instruction set only fails on every machine, not just on some.
ISA_DEFAULT := ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2
ISA_AVX2 := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2

test: $(STAMP)  ## run the fast test suite, then the ISP tests on default and AVX2 kernels (what CI runs)
	$(PYTHON) -m pytest -m "not slow" $(ARGS)
	$(MAKE) --no-print-directory test-kernels

test-kernels: $(STAMP)  ## the ISP parity tests with torch forced to default and to AVX2 CPU kernels
	$(ISA_DEFAULT) $(PYTHON) -m pytest -q -m "not slow" tests/isp
	$(ISA_AVX2) $(PYTHON) -m pytest -q -m "not slow" tests/isp

test-all: $(STAMP)  ## run every test, the slow end-to-end runs included
	$(PYTHON) -m pytest $(ARGS)

lint: $(STAMP)  ## ruff lint and format check
	$(PYTHON) -m ruff check raw2logit scripts tests run.py
	$(PYTHON) -m ruff format --check raw2logit scripts tests run.py

format: $(STAMP)  ## apply ruff's formatting and safe fixes
	$(PYTHON) -m ruff check --fix raw2logit scripts tests run.py
	$(PYTHON) -m ruff format raw2logit scripts tests run.py

bench: $(STAMP)  ## ISP throughput benchmark (prints a table, writes outputs/bench/isp.json)
	$(PYTHON) scripts/bench_isp.py $(ARGS)

run: $(STAMP)  ## the main job: drift synthesis on the embedded simulated microscopy data
	$(PYTHON) run.py $(ARGS)

data: $(STAMP)  ## download Raw-Microscopy and Raw-Drone from Zenodo into data/ (needs internet)
	$(PYTHON) scripts/download_datasets.py --root data $(ARGS)

clean:  ## remove run outputs (keeps .venv and data/)
	rm -rf outputs/* multirun .pytest_cache
	touch outputs/.gitkeep
