# Every target installs what it needs; on a fresh machine `make test` and
# `make run` are the only commands a developer or CI has to know.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# `make run` installs only the runtime dependencies; the developer tools (the dev
# extra) come with `make install` and `make test`.
RUN_STAMP := $(VENV)/.runtime-stamp

.PHONY: install test lint run bench clean dist console-screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $(RUN_STAMP)

lint: install
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/mypy
	$(BIN)/mypy --strict examples/orders
	$(BIN)/lint-imports

test: install lint
	bash scripts/test-deps.sh
	# Bytecode first: where PYTHONDONTWRITEBYTECODE is set (this CI machine), every
	# `safehold` process the tests start would compile its modules again (~0.2 s each).
	$(BIN)/python -m compileall -q src examples
	$(BIN)/pytest

run: $(RUN_STAMP)
	bash scripts/build-console.sh
	bash scripts/demo.sh

# A wheel and an sdist in dist/, for `pip install dist/*.whl` or `pipx install dist/*.whl`.
dist: $(RUN_STAMP)
	bash scripts/build-console.sh
	$(BIN)/pip install -q build
	$(BIN)/python -m build --outdir dist .

bench: install
	bash bench/run.sh

# Screenshots of the operator console, taken in headless Chromium, into docs/console/.
console-screenshots: install
	bash scripts/test-deps.sh
	SAFEHOLD_SCREENSHOTS=docs/console $(BIN)/pytest tests/web -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info src/*.egg-info

# Index memory and open time against the blob count (1 M, 10 M, 100 M); see bench/index_bench.py.
.PHONY: bench-index
bench-index: install
	$(BIN)/python bench/index_bench.py

# Whether excludes slow the walker: 10,000 files, 20 patterns, against restic; see bench/exclude_bench.py.
.PHONY: bench-excludes
bench-excludes: install
	$(BIN)/python bench/exclude_bench.py

# issue 11: PostgreSQL against pgBackRest (installs the Debian package if missing).
.PHONY: bench-db
bench-db: install
	bash bench/db_run.sh $(DB_BENCH_ARGS)

# The controller at fleet scale: 2 replicas + 4 agents on PostgreSQL at 127.0.0.1:5432,
# 100 / 1,000 / 10,000 partitions; see bench/fleet_bench.py and docs/benchmark.md § Fleet.
.PHONY: bench-fleet
bench-fleet: install
	$(BIN)/pip install -q py-spy
	$(BIN)/python bench/fleet_bench.py --profile $(FLEET_ARGS)
