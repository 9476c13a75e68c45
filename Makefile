# Everyday commands (see README). Every target that runs code first makes the venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SWEEP_STEPS ?= 400
# make ablation: the ablations x seeds, resumable (re-run the same command: finished jobs are skipped,
# interrupted ones resume from their last.ckpt), two jobs at a time; ablation.md / ablation.png in ABLATION_DIR.
ABLATION_DIR ?= logs/train/ablation
ABLATION_STEPS ?= 400
ABLATION_SEEDS ?= 1,2,3
ABLATION_EXPERIMENTS ?= full,ablation_no_dmdcu,ablation_lfm,ablation_gfm,ablation_single_frame
ABLATION_ARGS ?=

.PHONY: install browser train test test-fast bench sweep ablation pretrain lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,export,baselines]"
	$(BIN)/python -m lgfn.ops || echo "note: deform_conv2d will use its pure-PyTorch path"
	touch $(STAMP)

train: install
	$(BIN)/python train.py experiment=quickstart

# The report.html tests open the page in a headless Chromium: Debian's `chromium`, installed here where it is
# missing and apt-get can (as root); otherwise those tests skip and say why.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [ -n "$$LGFN_CHROMIUM" ]; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (apt-get) for the report.html browser tests"; \
		{ DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "note: chromium could not be installed: the report.html browser tests will skip"; \
	else \
		echo "note: no chromium (and no root apt-get to install it): the report.html browser tests will skip"; \
	fi

test: install browser
	$(BIN)/python -m pytest -q

test-fast: install browser
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python benchmarks/run.py

sweep: install
	OMP_NUM_THREADS=1 $(BIN)/python train.py -m hydra/launcher=joblib experiment=full,ablation_no_dmdcu,ablation_lfm,ablation_gfm,ablation_single_frame \
		model=lgfn_small data=builtin trainer=cpu data.num_workers=0 \
		trainer.max_epochs=-1 trainer.max_steps=$(SWEEP_STEPS) trainer.val_check_interval=$(SWEEP_STEPS) trainer.check_val_every_n_epoch=null

ablation: install
	OMP_NUM_THREADS=1 $(BIN)/python train.py -m hydra/launcher=joblib hydra.sweep.dir=$(ABLATION_DIR) \
		experiment=$(ABLATION_EXPERIMENTS) seed=$(ABLATION_SEEDS) \
		model=lgfn_small data=builtin trainer=cpu data.num_workers=0 \
		trainer.max_epochs=-1 trainer.max_steps=$(ABLATION_STEPS) trainer.val_check_interval=$(ABLATION_STEPS) \
		trainer.check_val_every_n_epoch=null $(ABLATION_ARGS)

pretrain: install
	$(BIN)/python train.py experiment=pretrain

lint: install
	$(BIN)/ruff check src tests benchmarks train.py eval.py

format: install
	$(BIN)/ruff format src tests benchmarks train.py eval.py
	$(BIN)/ruff check --fix src tests benchmarks train.py eval.py

clean:
	rm -rf outputs multirun wandb .pytest_cache
