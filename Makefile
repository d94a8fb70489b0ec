# sockprobe: every target creates .venv first if it is missing, so a fresh
# machine with only Python 3 needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help run test lint bench clean

help: ## Show the targets and what each does
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-6s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed ## Create .venv, install sockprobe and run every probe (sockprobe all)
	$(BIN)/sockprobe all

test: $(VENV)/.installed-dev ## Create .venv, install with the dev extra and run the test suite
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev ## ruff and mypy (strict)
	$(BIN)/ruff check sockprobe tests bench
	$(BIN)/ruff format --check sockprobe tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed-dev ## Speed goals as ratios against baselines measured in the same run
	$(BIN)/python bench/run.py

clean: ## Remove .venv and caches
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
