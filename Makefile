# Settle developer commands. `make run` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: help install run test test-fast lint typecheck format migrate clean bench soak security lock audit

# `make` alone lists the targets, like `make help`.
.DEFAULT_GOAL := help

help: ## list the targets (the `## ` comment of each)
	@awk 'BEGIN { FS = ":[^#]*## " } /^[a-zA-Z_-]+:[^#]*## / { printf "  make %-10s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

CHECK_PYTHON := $(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required (set PYTHON=...)" if sys.version_info < (3, 11) else 0)'

$(STAMP): pyproject.toml constraints.txt
	@$(CHECK_PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install Settle with its dev tools

# exec: the shell gives its place (and pid) to settle.run, so the SIGTERM that make
# forwards to its child reaches it (settle/run.py explains the signals).
run: install ## start the whole stack (embedded PostgreSQL/Redis unless URLs are set), one per checkout
	@exec $(BIN)/python -m settle.run

test: install ## the whole suite (embedded servers unless DATABASE_URL/REDIS_URL are set)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install ## unit tests only: starts no PostgreSQL or Redis and needs none
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

security: install ## bandit: medium and high severity findings fail
	$(BIN)/bandit -q -r domain gateway workers settle -ll

lint: install ## ruff, mypy and the layering contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy domain gateway workers settle bench
	$(BIN)/lint-imports

format: install ## ruff format and the fixable lint findings
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: install ## apply migrations to DATABASE_URL
	$(BIN)/settle migrate

clean: ## remove .venv, var/ (the embedded databases' data) and the caches
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache *.egg-info

bench: install ## end-to-end throughput and latency next to a direct-SQL ceiling (README "Performance")
	$(BIN)/python -m bench $(BENCH_ARGS)

# Not part of CI: 10 minutes at half the uniform rate; fails on any error, an RSS growth
# of 10 % or more, or connections that grew (README "Soak").
soak: install ## half the benchmarked rate for 10 minutes: errors, RSS and connections per process
	$(BIN)/python -m bench --soak $(SOAK_ARGS)

# The header `make lock` writes at the top of constraints.txt.
define LOCK_HEADER
# constraints.txt: the lock file. Every distribution that `pip install -e '.[dev]'`
# resolves to, pinned, so every machine and CI run installs the same versions.
# `make install` installs with `-c constraints.txt`; pyproject.toml keeps the
# loose ranges. Do not edit by hand: after changing dependencies in pyproject.toml
# (or to take upgrades), run `make lock`, which resolves pyproject.toml afresh in a
# throwaway virtualenv and rewrites this file, then `make install` and `make test`.
# `make audit` checks these pins against known vulnerabilities (needs network).
endef
export LOCK_HEADER

lock: ## re-resolve pyproject.toml in a throwaway venv and rewrite constraints.txt
	@$(CHECK_PYTHON)
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install --quiet -e '.[dev]'; \
	{ printf '%s\n' "$$LOCK_HEADER"; \
	  "$$tmp/venv/bin/python" -m pip freeze --exclude-editable \
	    | grep -v -i -E '^settle( |=|@)' | LC_ALL=C sort -f; } > "$$tmp/constraints.txt"; \
	mv "$$tmp/constraints.txt" constraints.txt
	@echo "constraints.txt rewritten; run 'make install' to apply it"

# Not part of CI: it needs network access to the vulnerability database. --strict makes
# a dependency that could not be looked up an error, not a silent skip.
audit: install ## pip-audit the pinned dependencies (needs network access to the vulnerability database)
	@test -x $(BIN)/pip-audit || $(BIN)/python -m pip install --quiet -c constraints.txt pip-audit
	$(BIN)/pip-audit --strict -r constraints.txt
