# The two commands a fresh machine needs: `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-all lint serve

setup:
	@bash scripts/setup.sh

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
