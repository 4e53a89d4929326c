# Two entry points on a fresh machine: `make demo` and `make test`. Both create .venv first.
# torch is pinned to the local CPU build through constraints.txt so pip never pulls a CUDA wheel.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip -q --disable-pip-version-check
STAMP := $(VENV)/.installed

.PHONY: venv demo test serve embedded-data pretrain-tiny eval-embedded lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(VENV)/bin/toto forecast examples/electricity_demand.csv --prediction-length 48 \
		--output demo_forecast.csv --plot demo_forecast.png

test: venv
	$(PY) -m pytest -q -p no:cacheprovider

serve: venv
	$(VENV)/bin/bentoml serve serve.service:TotoService --host 127.0.0.1 --port 3000

# The embedded model: export its real training/held-out series, then pretrain (see docs/embedded-model.md).
embedded-data: venv
	$(PY) tools/prepare_embedded_data.py --config configs/embedded-data.yaml --out data/embedded

pretrain-tiny: embedded-data
	$(VENV)/bin/toto-train fit --config configs/pretrain-tiny.yaml

# Zero-shot scores of the embedded model on the held-out real series, next to seasonal naive and AutoETS.
EVAL_DIR := runs/heldout-eval
eval-embedded: embedded-data
	$(VENV)/bin/boom eval --model seasonalnaive --data data/embedded/heldout --out $(EVAL_DIR)
	$(VENV)/bin/boom eval --model autoets --data data/embedded/heldout --out $(EVAL_DIR)
	$(VENV)/bin/boom eval --model toto --checkpoint toto-tiny --name toto-tiny --data data/embedded/heldout --out $(EVAL_DIR)
	$(VENV)/bin/boom leaderboard $(EVAL_DIR) --data data/embedded/heldout --by series

lint: venv
	$(VENV)/bin/ruff check toto boom train serve tests benchmarks tools

clean:
	rm -rf $(VENV) build *.egg-info
