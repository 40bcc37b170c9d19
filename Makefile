# lictel: two commands for a newcomer, `make run` and `make test`. Both build .venv/ from the
# pinned requirements.lock first (again only when the lock or pyproject.toml change).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= lictel-data
PYTEST_ARGS ?=

.PHONY: run test test-long lint typecheck bench clean venv

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

## make run: the embedded stack on a simulated estate (or: make run ARGS="--jsonl FILE")
run: $(STAMP)
	$(BIN)/lictel run --data-dir $(DATA) $(ARGS)

## make test: lint, then the whole suite (unit + integration against real Tansu and chDB)
test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## make test-long: the long-running tests (crash, scale)
test-long: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check lictel producers streams sinks schemas tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

## make bench: the benchmarks of docs/benchmarks.md
bench: $(STAMP)
	$(BIN)/python bench/engine_throughput.py
	$(BIN)/python bench/stream_worker.py
	$(BIN)/python bench/stream_scaling.py
	$(BIN)/python bench/run_workers.py
	$(BIN)/python bench/sink_rows.py
	$(BIN)/python bench/run_end_to_end.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/flexnet_parse.py
	$(BIN)/python bench/reports.py

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .ruff_cache .mypy_cache
