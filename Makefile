# autoroute: `make help` lists the targets.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help install train data test test-slow simulate ab-report bench-rules lint clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP) ## create .venv/ and install the project with its dev extras

data: $(STAMP) ## build the datasets from ../shared/data (DVC stages raw -> interim -> processed)
	$(VENV)/bin/dvc repro

train: data ## the main job: build the data, train, evaluate, register the champion (local MLflow store)
	$(PY) -m training.run

test: $(STAMP) ## run the test suite (slow tests excluded)
	$(PY) -m pytest -q

test-slow: $(STAMP) ## run only the slow tests (full-size runs, accelerate launch)
	$(PY) -m pytest -q -m slow

simulate: $(STAMP) ## simulated users vs the real service: Tier 4 on/off curves, a challenger from their feedback, A/B report (MLflow)
	$(PY) -m training.simulate_users

ab-report: $(STAMP) ## champion vs challenger from the service log (paths.feedback_db): per-arm rates, cost, latency (MLflow)
	$(PY) -m training.compare_arms

bench-rules: $(STAMP) ## Tier 1+2 decision latency in process (p50/p99)
	$(PY) -m autoroute.bench_rules

clean: ## remove caches and local run outputs (keeps .venv and data)
	rm -rf .pytest_cache .hypothesis outputs multirun

# ---------------------------------------------------------------------------- serving
# (serving) the BentoML service: serving/README.md
SERVE_PORT ?= 3000
BENTO_HOME ?= $(shell $(PY) -c "from autoroute.config import load_config; print(load_config([]).paths.bentoml_home)" 2>/dev/null || echo $$HOME/.autoroute/bentoml)

.PHONY: serve bento schemathesis bench-serving bench-compare soak

serve: $(STAMP) ## run the HTTP service (champion from the BentoML store) on 127.0.0.1:$(SERVE_PORT)
	BENTOML_HOME=$(BENTO_HOME) $(VENV)/bin/bentoml serve serving.service:AutoRoute --host 127.0.0.1 --port $(SERVE_PORT)

bento: $(STAMP) ## build a Bento (service + champion + conf) with `bentoml build`
	rm -rf dist && $(PY) -m pip wheel -q --no-deps -w dist .
	BENTOML_HOME=$(BENTO_HOME) $(VENV)/bin/bentoml build -f serving/bentofile.yaml .

schemathesis: $(STAMP) ## fuzz a live `bentoml serve` against its own OpenAPI schema (no 5xx, schema-valid responses)
	$(PY) -m serving.fuzz --max-examples 100

bench-serving: $(STAMP) ## decisions/s and latency: in process, and over HTTP with wrk (sustained, 3x overload, vs a bare BentoML endpoint)
	@command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk"; exit 1; }
	BENTOML_HOME=$(BENTO_HOME) $(PY) -m serving.benchmark

bench-compare: $(STAMP) ## in-process decision latency of code versions in one run (REFS="fd1ec37 2fdcf27 ." BUNDLE=<folder>, default the champion)
	BENTOML_HOME=$(BENTO_HOME) $(PY) -m serving.bench_compare $(if $(BUNDLE),--bundle $(BUNDLE)) $(if $(REFS),--refs $(REFS))

soak: $(STAMP) ## 10 minutes at the sustainable rate (SOAK_RATE, default 100/s): no errors, RSS growth < 10%, every answer logged
	@command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk"; exit 1; }
	BENTOML_HOME=$(BENTO_HOME) $(PY) -m serving.benchmark soak --rate $(or $(SOAK_RATE),100) --duration 600
