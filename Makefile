# sockprobe: every target creates .venv first if it is missing, so a fresh
# machine with only Python 3 needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# pip -q still shows a build backend's warnings; the only one an editable install of this
# tree gives is setuptools' "Editable installation" box (about a directory in the working
# directory named like the package: here that directory is the package), so it is hidden.
PIP_QUIET := PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q \
             --disable-pip-version-check

# test-all: the CPython versions the package supports (pyproject's classifiers), found in
# pyenv's versions or as pythonX.Y on PATH; TEST_ALL_EXCEPT skips some (CI has run the
# default interpreter's suite in .venv already).
TEST_ALL_VERSIONS ?= 3.10 3.11 3.12 3.13
TEST_ALL_EXCEPT   ?=
#: pytest arguments for each interpreter (default: the whole suite), e.g. tests/test_diff.py
TEST_ALL_ARGS     ?=
PYENV_ROOT        ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)

.DEFAULT_GOAL := help
.PHONY: help run test test-all check-dist lint bench clean

help: ## Show the targets and what each does
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip

$(VENV)/.installed: pyproject.toml setup.py | $(BIN)/python
	$(PIP_QUIET) -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml setup.py | $(BIN)/python
	$(PIP_QUIET) -e '.[dev]'
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed ## Create .venv, install sockprobe and run every probe (sockprobe all)
	$(BIN)/sockprobe all

test: $(VENV)/.installed-dev ## Create .venv, install with the dev extra and run the test suite
	$(BIN)/python -m pytest

test-all: ## The suite on every CPython 3.10-3.13 found here, each in its own .venv-3.X
	@found=0; failed=""; \
	for v in $(TEST_ALL_VERSIONS); do \
	  case " $(TEST_ALL_EXCEPT) " in *" $$v "*) continue;; esac; \
	  py=$$(ls -d $(PYENV_ROOT)/versions/$$v.*/bin/python$$v 2>/dev/null | sort -V | tail -n 1); \
	  if [ -z "$$py" ]; then py=$$(command -v python$$v || true); fi; \
	  if [ -z "$$py" ] || ! "$$py" -c 'import venv' 2>/dev/null; then \
	    echo "test-all: no usable CPython $$v here: skipped"; continue; fi; \
	  found=$$((found + 1)); env=.venv-$$v; \
	  echo "== CPython $$v ($$py) in $$env"; \
	  if [ ! -x $$env/bin/python ]; then "$$py" -m venv $$env || exit 1; fi; \
	  if [ ! -f $$env/.installed-dev ] || [ pyproject.toml -nt $$env/.installed-dev ] \
	     || [ setup.py -nt $$env/.installed-dev ]; then \
	    PYTHONWARNINGS="ignore:Editable installation" $$env/bin/python -m pip install -q \
	      --disable-pip-version-check -e '.[dev]' && touch $$env/.installed-dev || exit 1; fi; \
	  $$env/bin/python -m pytest -q -p no:cacheprovider $(TEST_ALL_ARGS) || failed="$$failed $$v"; \
	done; \
	echo "test-all: $$found interpreter(s) run$${failed:+; failed on:$$failed}"; \
	[ -z "$$failed" ]

# check-dist builds from a copy without build leftovers: a stale *.egg-info/SOURCES.txt
# (an editable install writes one) would add files that MANIFEST.in no longer names.
check-dist: $(VENV)/.installed-dev ## Build the sdist, install it in a fresh venv, run its tests unpacked
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir "$$tmp/tree"; tar -cf - --exclude='./.venv*' --exclude='*.egg-info' --exclude=./.git \
	  --exclude=./build --exclude=./dist --exclude=__pycache__ . | tar -xf - -C "$$tmp/tree"; \
	$(BIN)/python -m build -q --no-isolation --sdist --outdir "$$tmp" "$$tmp/tree" >/dev/null; \
	sdist=$$(ls "$$tmp"/sockprobe-*.tar.gz); tar xzf "$$sdist" -C "$$tmp"; \
	src=$$(ls -d "$$tmp"/sockprobe-*/); echo "check-dist: $$(basename $$sdist) unpacked"; \
	$(BIN)/python -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check "sockprobe[dev] @ file://$$sdist"; \
	cd "$$src" && "$$tmp/venv/bin/pytest" -q -p no:cacheprovider

lint: $(VENV)/.installed-dev ## ruff and mypy (strict)
	$(BIN)/ruff check sockprobe tests bench
	$(BIN)/ruff format --check sockprobe tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed-dev ## Speed goals as ratios against baselines measured in the same run
	$(BIN)/python bench/run.py

clean: ## Remove the venvs and caches
	rm -rf $(VENV) .venv-3.* build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
