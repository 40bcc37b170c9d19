# lictel: two commands for a newcomer, `make run` and `make test`. Both build .venv/ from the
# pinned requirements.lock (the package with its embedded stack) and requirements-dev.lock (test,
# lint and type-check tools) first, again only when a lock or pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= lictel-data
PYTEST_ARGS ?=
# The chart library the pages use, pinned in web/package-lock.json and served by lictel itself.
ECHARTS := lictel/web/static/vendor/echarts.min.js
CHROMIUM ?= /usr/bin/chromium
APT_CHROMIUM = DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
APT_COMPOSE = DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose >/dev/null

.PHONY: run test test-long lint typecheck bench clean venv web browser compose

venv: $(STAMP) $(ECHARTS)

## make web: the browser assets from the npm registry (integrity-checked by npm ci)
web: $(ECHARTS)

$(ECHARTS): web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the dashboard's chart library (Debian: apt-get install npm)"; exit 1; }
	npm ci --prefix web --ignore-scripts --no-audit --no-fund --loglevel=error
	mkdir -p $(dir $(ECHARTS))
	cp web/node_modules/echarts/dist/echarts.min.js web/node_modules/echarts/LICENSE $(dir $(ECHARTS))

## make browser: Debian's Chromium for the page tests (installed when missing and running as root)
browser:
	@test -x $(CHROMIUM) || { test "$$(id -u)" = 0 && { $(APT_CHROMIUM) || { apt-get update -q >/dev/null && $(APT_CHROMIUM); }; }; } || { echo "the page tests need Chromium at $(CHROMIUM) (Debian: apt-get install chromium)"; exit 1; }
	@test -x $(CHROMIUM) || { echo "Chromium was installed but is not at $(CHROMIUM): set CHROMIUM=... and LICTEL_CHROMIUM=..."; exit 1; }

## make compose: Debian's docker-compose, which validates docker-compose.yml in the tests (no engine needed)
compose:
	@command -v docker-compose >/dev/null || { test "$$(id -u)" = 0 && { $(APT_COMPOSE) || { apt-get update -q >/dev/null && $(APT_COMPOSE); }; }; } || { echo "the deployment tests need docker-compose (Debian: apt-get install docker-compose)"; exit 1; }

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

## make run: the embedded stack on a simulated estate (or: make run ARGS="--jsonl FILE")
run: $(STAMP) $(ECHARTS)
	$(BIN)/lictel run --data-dir $(DATA) $(ARGS)

## make test: lint, then the whole suite (unit + integration against real Tansu and chDB)
test: $(STAMP) $(ECHARTS) browser compose lint typecheck
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## make test-long: the long-running tests (crash, scale)
test-long: $(STAMP) $(ECHARTS) browser
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check lictel producers streams sinks schemas tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

## make bench: the benchmarks of docs/benchmarks.md
bench: $(STAMP)
	$(BIN)/python bench/engine_throughput.py
	$(BIN)/python bench/stream_worker.py
	$(BIN)/python bench/peer_quix.py
	$(BIN)/python bench/stream_scaling.py
	$(BIN)/python bench/run_workers.py
	$(BIN)/python bench/sink_rows.py
	$(BIN)/python bench/run_end_to_end.py
	$(BIN)/python bench/run_end_to_end.py --ten-million
	$(BIN)/python bench/reconcile.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/flexnet_parse.py
	$(BIN)/python bench/reports.py
	$(BIN)/python bench/api.py

clean:
	rm -rf $(VENV) .venv-peer $(DATA) .pytest_cache .ruff_cache .mypy_cache
