# Two commands for a newcomer: `make run` and `make test`. Each builds or refreshes the
# local virtual environment in .venv by itself, with the exact versions (and hashes) of
# requirements.lock, so a fresh machine needs only Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# The tool that writes the lock; only `make lock` installs it.
UV_VERSION := 0.13.9
# What the lock is for: Python 3.11 on Linux (x86_64; other machines share its markers).
LOCK_TARGET := --python-version 3.11 --python-platform linux

.PHONY: run test lint format typecheck check docs-check bench bench-short bench-client lock clean

# pip and setuptools come from the lock as well, so the editable install of the project itself
# needs nothing unpinned (no build isolation); `pip check` catches a lock that lags pyproject.toml.
$(STAMP): pyproject.toml $(LOCK)
	@echo "Building $(VENV) from $(LOCK): about 75 s on an idle 2-core machine, the first time only"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check >/dev/null || { $(BIN)/python -m pip check; \
	  echo "$(LOCK) does not satisfy pyproject.toml: run make lock"; exit 1; }
	touch $(STAMP)

# The first run builds .venv (about 75 s on an idle 2-core machine), then serves on port 8081.
run: $(STAMP)
	$(BIN)/tlytics

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadgroup --no-loadscope-reorder

# Lint is strict: any finding fails (CI runs it).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Rewrites files: the formatter, then ruff's safe fixes.
format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

# What CI runs (.ci/run), in this order: the cheap checks first.
check: lint typecheck test

# The documentation's own tests (also part of `make test`): the README's quick start against a
# real fresh server, every relative link of README.md and docs/, the settings table.
docs-check: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_quickstart.py tests/test_docs_links.py \
	  tests/test_cli.py::test_the_documented_configuration_table_matches_the_declarations

bench: $(STAMP)
	$(BIN)/python -m bench.ingest

# The same comparison, short (10 s per load run, no extras): about 2 minutes.
bench-short: $(STAMP)
	$(BIN)/python -m bench.ingest --duration 10

# The client library against a real local server: delivery, emit() rate and p99 (about a minute).
bench-client: $(STAMP)
	$(BIN)/python -m bench.client

# Re-resolves every dependency (pyproject.toml's, with the server and test extras, plus pip and the build
# system's requirements) to the newest versions allowed and writes them with hashes to $(LOCK).
export BUILD_REQUIRES := import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	{ echo pip; $(BIN)/python -c "$$BUILD_REQUIRES"; } | $(BIN)/uv pip compile pyproject.toml - --extra server --extra test --upgrade \
	  --generate-hashes $(LOCK_TARGET) --custom-compile-command "make lock" --quiet -o $(LOCK)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
