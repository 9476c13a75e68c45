# Everyday commands (see README). Every target that runs code first makes the venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SWEEP_STEPS ?= 400

.PHONY: install train test test-fast bench sweep pretrain lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,export]"
	$(BIN)/python -m lgfn.ops || echo "note: deform_conv2d will use its pure-PyTorch path"
	touch $(STAMP)

train: install
	$(BIN)/python train.py experiment=quickstart

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python benchmarks/run.py

sweep: install
	OMP_NUM_THREADS=1 $(BIN)/python train.py -m hydra/launcher=joblib experiment=full,ablation_no_dmdcu,ablation_lfm,ablation_gfm,ablation_single_frame \
		model=lgfn_small data=builtin trainer=cpu data.num_workers=0 \
		trainer.max_epochs=-1 trainer.max_steps=$(SWEEP_STEPS) trainer.val_check_interval=$(SWEEP_STEPS) trainer.check_val_every_n_epoch=null

pretrain: install
	$(BIN)/python train.py experiment=pretrain

lint: install
	$(BIN)/ruff check src tests benchmarks train.py eval.py

format: install
	$(BIN)/ruff format src tests benchmarks train.py eval.py
	$(BIN)/ruff check --fix src tests benchmarks train.py eval.py

clean:
	rm -rf outputs multirun wandb .pytest_cache
