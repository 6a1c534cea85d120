# The two commands of the README. Both set up .venv first (scripts/setup.sh; cheap when done).
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: setup demo test lint

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/rlhf demo $(DEMO_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

test: lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
