# The two commands of the README (demo, test), and the fast tier for editing. All set up .venv first
# (scripts/setup.sh; cheap when done).
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint docs docs-check

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/rlhf demo $(DEMO_ARGS)

# ruff (lint and format) over src, tests, bench and docs; mypy over src (settings in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check src tests bench docs
	$(VENV)/bin/ruff format --check src tests bench docs
	$(VENV)/bin/mypy

# The documentation site (site/): the reference pages regenerated from the code, then built strictly.
docs: setup
	$(VENV)/bin/python docs/gen_reference.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# The strict build of the site as committed (a broken link or page fails; tests/test_docs.py checks
# that the generated reference pages are current).
docs-check: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $$(mktemp -d)

# The whole suite: every tier, the real multi-process runs and the end-to-end demo included (the 30
# slowest tests listed at the end, to keep the suite's time in view).
test: lint docs-check
	$(VENV)/bin/python -m pytest --durations=30 $(PYTEST_ARGS)

# What a contributor runs while editing (about 1 min on 2 cores): every test that neither trains a
# model nor starts a process (those are marked `slow`; tests/conftest.py fails one that is not).
test-fast: setup
	$(VENV)/bin/ruff check src tests bench docs
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)
