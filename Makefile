# The two commands of the README (demo, test), and the fast tier for editing. All set up .venv first
# (scripts/setup.sh; cheap when done).
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/rlhf demo $(DEMO_ARGS)

# ruff (lint and format) over src, tests and bench; mypy over src (settings in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

# The whole suite: every tier, the real multi-process runs and the end-to-end demo included.
test: lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# What a contributor runs while editing (about 1 min on 2 cores): every test that neither trains a
# model nor starts a process (those are marked `slow`; tests/conftest.py fails one that is not).
test-fast: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)
