# Every target creates the virtualenv (.venv) and installs the project with
# its dev dependencies when pyproject.toml is newer than the last install.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STACK ?= dev
FORMAT ?= tree
PORT ?= 8787
INSTALLED := $(VENV)/.installed

.PHONY: install dev test lint format plan bench clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

## dev: serve the story API on http://127.0.0.1:$(PORT) with the mock provider
dev: install
	PORT=$(PORT) $(BIN)/python -m lambdas.devserver

## test: run every test (components under the mock engine, lambdas under moto)
test: install
	$(BIN)/python -m pytest

## lint: ruff (lint and format check) and mypy over components/ and lambdas/
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy components lambdas

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## plan: what `pulumi up --stack $(STACK)` would create, offline (FORMAT=tree|json)
plan: install
	@$(BIN)/python -m components.offline --stack $(STACK) --format $(FORMAT)

## bench: router benchmarks (installs the bench-only extra)
bench: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/router.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
