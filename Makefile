# The two quick-start commands: `make serve` and `make test`. Both bootstrap .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

# The Pythons outboxhub supports (the classifiers in pyproject.toml list exactly these; a test checks it).
# `make test` runs the whole suite in .venv and, on every other one of these, the suite without the
# service-bound tests in .venv-X.Y, made from pyenv's interpreter ($(PYENV_ROOT)/versions/X.Y.*) or
# pythonX.Y on PATH. A missing one is skipped with a message naming it, or fails the run under CI=true.
SUPPORTED_PYTHONS := 3.11 3.12 3.13
# pytest -m for those runs: no PostgreSQL/MariaDB/NATS/Node.js/Chromium (the `services` marker, see
# tests/conftest.py), not the wheel test, which the full run already does on every supported Python, and
# not the aiohttp variants of the gateway-facing tests (`ws_aiohttp`): those run on both WS servers in the
# full run, and on picows only (a C extension: the one whose behaviour differed between Pythons) here.
CROSS_MARKERS := not services and not wheel and not ws_aiohttp
PYTEST := -m pytest -q -p no:cacheprovider
# The full run (`make pytest`) spreads its tests over PYTEST_WORKERS processes (pytest-xdist, one test at a
# time to whichever worker is free): it mostly waits on subprocesses, sockets and the services. Every test
# keeps its own ports, tmp_path, PostgreSQL schema, MySQL database and NATS stream; each worker starts its
# own MongoDB stand-in. The tests marked `solo` then run in one process with nothing beside them: the wheel
# test (`python -m build` makes its release tree in the checkout, one build at a time) and the PostgreSQL
# restart (it restarts the server every other PostgreSQL test uses). PYTEST_WORKERS=0: one process, as before.
PYTEST_WORKERS ?= 2
# Each run first compiles src/ to .pyc: where PYTHONDONTWRITEBYTECODE is set (CI's machine sets it),
# every hub, CLI and crash-test subprocess would otherwise compile outboxhub again (≈ 0.2 s of CPU each).

.PHONY: serve test lint typecheck pytest install dev clean test-py test-pythons

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

$(DEVSTAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEVSTAMP)

# .venv-X.Y with the dev extras, from the interpreter PY_BIN (set by test-py).
.venv-%/.installed-dev: pyproject.toml
	@test -n "$(PY_BIN)" || { echo "make: $@ is made by 'make test-py PY=$*'" >&2; exit 2; }
	$(PY_BIN) -m venv --clear .venv-$*
	.venv-$*/bin/pip install --quiet --upgrade pip
	.venv-$*/bin/pip install --quiet -e '.[dev]'
	touch $@

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
	$(BIN)/python -m compileall -q src
ifeq ($(PYTEST_WORKERS),0)
	$(BIN)/python $(PYTEST) -p no:xdist
else
	$(BIN)/python $(PYTEST) -n $(PYTEST_WORKERS) -m 'not solo'
	$(BIN)/python $(PYTEST) -p no:xdist -m solo
endif

## The suite without the service-bound tests on one Python: make test-py PY=3.13
test-py:
	@case "$(PY)" in 3.[0-9]*) ;; *) echo "usage: make test-py PY=X.Y (one of $(SUPPORTED_PYTHONS))" >&2; exit 2;; esac
	@if py="$$(scripts/find-python.sh $(PY))"; then \
	    echo "== Python $(PY) ($$py): pytest -m '$(CROSS_MARKERS)' in .venv-$(PY)"; \
	    $(MAKE) --no-print-directory .venv-$(PY)/.installed-dev PY_BIN="$$py" && \
	    .venv-$(PY)/bin/python -m compileall -q src && \
	    .venv-$(PY)/bin/python $(PYTEST) -m '$(CROSS_MARKERS)'; \
	elif [ "$$CI" = true ]; then \
	    echo "make test-py: Python $(PY) is missing and CI=true: every supported Python must be tested" >&2; exit 1; \
	else \
	    echo "make test-py: skipping Python $(PY) (not found; CI=true would fail here)"; \
	fi

# Every supported Python other than the one .venv runs (or will run) on, side by side (the runs mostly
# wait on sockets and subprocesses); each run's output is printed when it ends, and the target fails when
# any run failed. It does not need .venv, so `make test` starts it first.
test-pythons:
	@py="$(BIN)/python"; [ -x "$$py" ] || py="$(PYTHON)"; \
	main="$$("$$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"; runs=""; \
	for v in $(SUPPORTED_PYTHONS); do \
	    [ "$$v" = "$$main" ] && continue; \
	    $(MAKE) --no-print-directory test-py PY=$$v > .test-py-$$v.log 2>&1 & runs="$$runs $$!:$$v"; \
	done; \
	status=0; for run in $$runs; do \
	    wait "$${run%%:*}" || status=1; cat ".test-py-$${run##*:}.log"; \
	done; \
	exit $$status

## Install the dev extras into .venv and run the whole suite (ruff, mypy (strict), pytest), and alongside,
## from the start, the suite without the service-bound tests on the other supported Pythons.
# The other Pythons' runs (test-pythons: venvs, then pytest) start in the background; their output is
# printed after the full run's, and `make test` fails when any part failed.
test:
	@$(MAKE) --no-print-directory test-pythons > .test-pythons.log 2>&1 & others=$$!; \
	status=0; $(MAKE) --no-print-directory lint typecheck pytest || status=1; \
	echo "== waiting for the runs on the other supported Pythons"; \
	wait $$others || status=1; cat .test-pythons.log; \
	exit $$status

clean:
	rm -rf $(VENV) $(foreach v,$(SUPPORTED_PYTHONS),.venv-$(v) .test-py-$(v).log) .test-pythons.log .mypy_cache .ruff_cache .pytest_cache
