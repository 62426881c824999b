# Settle developer commands. `make run` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test test-fast lint typecheck format migrate clean bench

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required (set PYTHON=...)" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install Settle with its dev tools

run: install ## start gateway, worker, beat and flower (embedded PostgreSQL/Redis unless URLs are set)
	$(BIN)/python -m settle.run

test: install ## the whole suite (embedded servers unless DATABASE_URL/REDIS_URL are set)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install ## unit tests only (no services)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: install ## ruff, mypy and the layering contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy domain gateway workers settle bench
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: install ## apply migrations to DATABASE_URL
	$(BIN)/settle migrate

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache *.egg-info

bench: install ## end-to-end throughput vs direct SQL on the same PostgreSQL (see bench/)
	$(BIN)/python -m bench.throughput $(BENCH_ARGS)
