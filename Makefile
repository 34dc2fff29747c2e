# medsweep — `make train` and `make test` work on a fresh clone; `make help` lists every target.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.stamp-install
EXP ?=
FOLDS ?= 5
ARGS ?=
DIR ?=
SWEEP ?=
RESUME ?=
RUN ?=

.DEFAULT_GOAL := help
.PHONY: help install train test lint format cv sweep report evaluate clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[dev,slurm]'
	$(PIP) install -q --no-deps animal-mnist==0.4
	touch $(STAMP)

install: $(STAMP) ## create .venv and install medsweep with its dev tools (once; redone when pyproject.toml changes)

train: install ## train the default configuration on the built-in offline digits data
	$(PY) train.py $(ARGS)

test: install ## run the test suite (CPU, offline)
	$(VENV)/bin/pytest -q $(ARGS)

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check src tests train.py evaluate.py
	$(VENV)/bin/ruff format --check src tests train.py evaluate.py

format: install ## ruff format and autofix
	$(VENV)/bin/ruff format src tests train.py evaluate.py
	$(VENV)/bin/ruff check --fix src tests train.py evaluate.py

cv: install ## k-fold cross-validation: make cv EXP=<preset> FOLDS=5 ARGS="model=resnet18" [RESUME=<sweep dir>]
	$(PY) train.py -m $(if $(EXP),experiment=$(EXP)) fold=kfold fold.n_folds=$(FOLDS) 'fold.index=range($(FOLDS))' \
		$(if $(RESUME),hydra.sweep.dir=$(RESUME) skip_done=true) $(ARGS)

sweep: install ## a named study grid: make sweep SWEEP=<preset>/<grid> ARGS="..." [RESUME=<sweep dir>]
	@test -n "$(SWEEP)" || { echo "SWEEP=<preset>/<grid> is required; grids:"; cd conf/sweep && ls */*.yaml | sed 's/.yaml$$//'; exit 2; }
	$(PY) train.py -m sweep=$(SWEEP) $(if $(RESUME),hydra.sweep.dir=$(RESUME) skip_done=true) $(ARGS)

report: install ## tables, statistics and figures of a sweep: make report DIR=outputs/multirun/...
	$(VENV)/bin/medsweep report $(DIR) $(ARGS)

evaluate: install ## thresholds, calibration, CIs, TTA, Grad-CAM: make evaluate RUN=outputs/... ARGS="eval.threshold.method=youden"
	@test -n "$(RUN)" || { echo "RUN=<run folder or multirun folder> is required"; exit 2; }
	$(PY) evaluate.py run=$(RUN) $(ARGS)

clean: ## remove run outputs and caches (keeps .venv)
	rm -rf outputs multirun lightning_logs .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

GPUS ?=
PER_GPU ?= 1
.PHONY: gpu-sweep slurm-sweep
gpu-sweep: install ## a grid over this machine's GPUs: make gpu-sweep ARGS="loss=focal,bce" [GPUS=0,1] [PER_GPU=2] [SWEEP=<preset>/<grid>]
	$(PY) train.py -m hydra/launcher=local_gpus $(if $(GPUS),'hydra.launcher.gpus=[$(GPUS)]') \
		hydra.launcher.jobs_per_gpu=$(PER_GPU) trainer=gpu $(if $(SWEEP),sweep=$(SWEEP)) \
		$(if $(RESUME),hydra.sweep.dir=$(RESUME) skip_done=true) $(ARGS)

slurm-sweep: install ## a grid as a SLURM job array: make slurm-sweep SITE=<conf/local file> ARGS="..." [SWEEP=<preset>/<grid>]
	$(PY) train.py -m hydra/launcher=slurm $(if $(SITE),+local=$(SITE)) trainer=gpu \
		$(if $(SWEEP),sweep=$(SWEEP)) $(if $(RESUME),hydra.sweep.dir=$(RESUME) skip_done=true) $(ARGS)

.PHONY: bench
bench: install ## suite vs plain PyTorch loop -> docs/benchmarks.md (minutes): make bench [ARGS="--tiny --out /tmp/b"]
	$(VENV)/bin/medsweep bench $(ARGS)

PORT ?= 8501
.PHONY: app
app: install ## the inference web app on 127.0.0.1: make app RUN=<run or multirun folder> [PORT=8501] [ARGS="--max-pixels 50000000"]
	@test -n "$(RUN)" || { echo "RUN=<run folder or multirun folder> is required"; exit 2; }
	$(PY) -m medsweep.app $(RUN) --port $(PORT) $(ARGS)
