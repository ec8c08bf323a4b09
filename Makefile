# The two commands of the README: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench clean

$(STAMP): requirements.txt constraints.txt docker/requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	touch $(STAMP)

# Embedded default: synthetic candles (labelled as such) in a local store, no AWS, no internet.
DEMO_STORE := .demo/store
DEMO_UNTIL := 2026-11-01
demo: $(STAMP)
	$(PY) -m backtest refresh --source synthetic --symbol DEMOUSDT --data-url $(DEMO_STORE) --until $(DEMO_UNTIL) --history-days 730
	$(PY) -m backtest run --symbol DEMOUSDT --data-url $(DEMO_STORE) --start 2025-11-01 --end $(DEMO_UNTIL) --window 15d --fee-bps 10 --results-url .demo/results
	@echo "result files: $$(ls -d $(CURDIR)/.demo/results/DEMOUSDT.*)"

test: $(STAMP) lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) .demo .pytest_cache
