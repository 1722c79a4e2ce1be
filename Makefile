# The two quick-start commands: `make serve` and `make test`. Both bootstrap .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: serve test lint typecheck pytest install dev clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

$(DEVSTAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEVSTAMP)

install: $(STAMP)

dev: $(DEVSTAMP)

## Install into .venv and start the hub on embedded SQLite (prints a dev token and the dashboard URL).
serve: $(STAMP)
	$(BIN)/outboxhub serve

lint: $(DEVSTAMP)
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples

typecheck: $(DEVSTAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict examples

pytest: $(DEVSTAMP)
	-scripts/ensure-browser.sh
	-cd clients/js && npm ci --no-audit --no-fund --silent
	$(BIN)/python -m pytest -q -p no:cacheprovider

## Install the dev extras into .venv and run the whole suite: ruff, mypy (strict), pytest.
test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
