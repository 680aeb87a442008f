# Every target creates the virtualenv (.venv) and installs the pinned
# dependencies (requirements-dev.txt) and the project itself when a lock file
# or pyproject.toml is newer than the last install.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STACK ?= dev
FORMAT ?= tree
PORT ?= 8787
JOBS ?= 2
MUTANTS ?=
INSTALLED := $(VENV)/.installed
PIP_COMPILE := $(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url \
	--no-emit-find-links --no-emit-trusted-host

.DEFAULT_GOAL := help
.PHONY: help install dev test lint format plan bench mutation lock clean

## help: list the targets
help:
	@awk -F': ' '/^## / {sub(/^## /, ""); printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

## install: create .venv and install the pinned dependencies and the project
install: $(INSTALLED)

$(INSTALLED): requirements-dev.txt requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

## dev: serve the story API on 127.0.0.1:8787 (PORT, DEV_LOG_LEVEL, DEV_METRICS=1)
dev: install
	PORT=$(PORT) $(BIN)/python -m lambdas.devserver

## test: run every test (components under the mock engine, lambdas under moto)
test: install
	$(BIN)/python -m pytest

## lint: ruff (lint and format check) and mypy over components/ and lambdas/
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy components lambdas mutation

## format: fix what ruff can fix and format the code
format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## plan: offline, what `pulumi up` would create for STACK=dev|staging|production (FORMAT=json)
plan: install
	@$(BIN)/python -m components.offline --stack $(STACK) --format $(FORMAT)

## bench: the benchmarks in bench/ (installs the bench-only extra)
bench: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/router.py
	$(BIN)/python bench/coldstart.py
	$(BIN)/python bench/devserver.py

## mutation: mutation testing, then each module's score (slow; MUTANTS='lambdas.story_generator.router*' narrows it, JOBS=2)
mutation: install
	$(BIN)/python -m pip install --quiet -e '.[mutation]'
	$(BIN)/mutmut run --max-children $(JOBS) $(if $(MUTANTS),'$(MUTANTS)')
	$(BIN)/python mutation/score.py --fail-under 90 $(if $(MUTANTS),--only '$(MUTANTS)')

## lock: re-pin requirements.txt and requirements-dev.txt from pyproject.toml
lock: install
	$(BIN)/python -m pip install --quiet -e '.[lock]'
	CUSTOM_COMPILE_COMMAND="make lock" $(PIP_COMPILE) -o requirements.txt pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" $(PIP_COMPILE) --extra dev -o requirements-dev.txt pyproject.toml

## clean: remove the virtualenv and caches
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info mutants
