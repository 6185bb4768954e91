# The README's two commands: `make run` and `make test`. Both build .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install: make reinstalls only when pyproject.toml is newer.
# `make run` needs jobq alone; `make test` and `make lint` add the dev tools (Playwright,
# mypy, schemathesis...), which a first try of the demo should not have to download.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_JOBS ?= 20
# Everything ruff lints and formats; one list so `make fmt` fixes what `make lint` checks.
PY_DIRS := src tests examples bench

.PHONY: venv run test lint fmt clean

$(RUN_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## run: API + worker + demo kinds on ./jobq.db (SQLite), with some demo jobs to watch
run: $(RUN_STAMP)
	$(BIN)/jobq migrate
	JOBQ_LOG_JSON=$${JOBQ_LOG_JSON:-false} JOBQ_LOG_JOBS=$${JOBQ_LOG_JOBS:-true} $(BIN)/jobq serve --demo-jobs $(DEMO_JOBS)

## test: lint, type-check, then every test (PostgreSQL and SQLite); PYTEST_ARGS passes through
test: venv lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

## lint: ruff (rules and formatting, check only) and mypy
lint: venv
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)
	$(BIN)/mypy

## fmt: format and apply ruff's safe fixes
fmt: venv
	$(BIN)/ruff format $(PY_DIRS)
	$(BIN)/ruff check --fix $(PY_DIRS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
