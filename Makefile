# Two commands for a fresh machine: `make run` (the whole pipeline) and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.metafgnet-installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup run test test-fast lint ui dashboard bench clean-venv

# The venv is rebuilt when missing or stale: broken interpreter, or pyproject.toml newer than
# the last install.
$(STAMP): pyproject.toml
	@if ! $(BIN)/python -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); fi
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

# The execution is saved as a DVC experiment named after the commit (run-<commit>): the baseline
# docs/comparing.md compares against, whose outputs are in this machine's DVC cache.
run: setup
	$(BIN)/metafgnet check
	$(BIN)/dvc repro
	$(BIN)/dvc exp save -f -n run-$$(git rev-parse --short HEAD)

# branch coverage of the library, measured in the test process (docs/testing.md)
COV := --cov=src/metafgnet --cov-branch --cov-report=term:skip-covered

test: setup lint
	$(BIN)/python -m pytest -q $(COV)

# unit and invariant tests only: no pipelines, servers, subprocesses or torchrun (`slow` marker)
test-fast: setup lint
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check src pipeline tests bench
	$(BIN)/mypy
	$(BIN)/metafgnet params check params.yaml

ui: setup
	@echo "Runs: http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning"
	@echo "Executions side by side: http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning&viewStateShareKey=compare"
	@echo "(experiment 1 is metafgnet in a fresh mlflow.db; otherwise pick it under Experiments)"
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --workers 1 \
		--backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}"

# the Optuna study, live, at http://127.0.0.1:8080 (storage: tune.storage of params.yaml)
dashboard: setup
	$(BIN)/metafgnet tune dashboard

bench: setup
	$(BIN)/python bench/meta_step.py --json results/bench/meta_step.json
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/peers.py --json results/bench/peers.json
	$(BIN)/python bench/pipeline.py --json results/bench/pipeline.json

clean-venv:
	rm -rf $(VENV)
