"""Every DAG file imports cleanly and carries the basics: tags, retries, docs, a start date."""

from __future__ import annotations

from datetime import timedelta

import pytest

from backtest_airflow.planning import PARAM_KEYS
from backtest_airflow.settings import (
    EXCHANGE_POOL,
    LOCAL_POOL,
    PAIRS_VARIABLE,
    asset_uri,
    load_settings,
    pairs_from_file,
)
from tests.support import REPO, environment
from tests.support.dag import load_daily_dag
from tests.support.strategies import RANGE_POSITION, drop


def dag_bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_every_dag_file_imports_without_errors():
    bag = dag_bag()
    assert bag.import_errors == {}
    assert "crypto_backtest_daily" in bag.dags


@pytest.fixture(scope="module")
def dags():
    return dag_bag().dags


def test_dags_have_tags_docs_and_retries(dags):
    for dag_id, dag in dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md and len(dag.doc_md) > 200, dag_id
        assert "retries" in dag.default_args and "retry_delay" in dag.default_args, dag_id
        assert dag.description, dag_id
        assert dag.catchup is False, dag_id
        assert dag.start_date is not None, dag_id


def test_daily_dag_shape(dags):
    dag = dags["crypto_backtest_daily"]
    assert str(dag.schedule) == "@daily" or getattr(dag.timetable, "summary", "") == "@daily"
    tasks = dag.task_dict
    assert set(tasks) == {"plan", "chunks", "jobs", "refresh", "candles", "backtest", "rank"}
    assert tasks["jobs"].upstream_task_ids == tasks["chunks"].upstream_task_ids == {"plan"}
    assert tasks["refresh"].upstream_task_ids == {"plan", "chunks"}  # one per chunk, not per job
    assert tasks["candles"].upstream_task_ids == {"plan", "refresh"}
    assert tasks["backtest"].upstream_task_ids == {"jobs", "refresh"}
    assert tasks["rank"].upstream_task_ids == {"plan", "backtest"}
    # rank and candles run after failed chunks, but not without a plan (bad params fail fast)
    assert tasks["rank"].trigger_rule == tasks["candles"].trigger_rule == "all_done_min_one_success"
    assert tasks["backtest"].trigger_rule == "all_done"
    assert tasks["refresh"].pool == EXCHANGE_POOL and tasks["backtest"].pool == LOCAL_POOL
    assert [outlet.uri for outlet in tasks["candles"].outlets] == [asset_uri(load_settings().data_url, "candles")]
    assert tasks["refresh"].outlets == []  # one candles event per run, not one per chunk
    assert tuple(dag.params) == PARAM_KEYS  # what plan accepts is what the form shows, in order
    assert dag.default_args["retries"] == 0  # BACKTEST_TASK_RETRIES=0 in tests; production default 2


@pytest.mark.parametrize("executor", ["batch", "local"])
def test_the_backtest_task_is_the_executors_operator_with_its_settings(executor):
    settings = {"BACKTEST_EXECUTOR": executor, "BACKTEST_BATCH_JOB_QUEUE": "queue", "BACKTEST_BATCH_POLL_SECONDS": "7"}
    backtest = load_daily_dag(**settings).task_dict["backtest"]
    kwargs = backtest.partial_kwargs
    assert kwargs["trigger_rule"] == "all_done" and kwargs["map_index_template"].startswith("{{ task.tags")
    if executor == "batch":
        assert backtest.operator_class.__name__ == "BacktestBatchOperator"  # the provider's, following its job
        assert {k: kwargs[k] for k in ("job_queue", "deferrable", "poll_interval", "execution_timeout")} == {
            "job_queue": "queue",
            "deferrable": True,
            "poll_interval": 7,
            "execution_timeout": timedelta(seconds=3 * 3600 + 1800),  # 3 attempts of the job timeout, queued time
        }
    else:
        assert backtest.operator_class.__name__ == "LocalBatchOperator"
        assert backtest.pool == LOCAL_POOL and kwargs["max_active_tis_per_dagrun"] == 2


def test_the_trigger_form_shows_the_pairs_variable_when_set():
    """The form's default is the Variable's list (here from Airflow's env-var secrets backend, the
    one a parse outside the dag-processor can read); without it, the pairs file's."""
    variable = f"AIRFLOW_VAR_{PAIRS_VARIABLE.upper()}"
    with environment(**{variable: "ethusdt, BTCUSDT SOLUSDT"}):
        assert load_daily_dag().params["pairs"] == ["ethusdt", "BTCUSDT", "SOLUSDT"]  # plan validates them
    with environment(**{variable: '["ADAUSDT"]'}):
        assert load_daily_dag().params["pairs"] == ["ADAUSDT"]
    assert load_daily_dag().params["pairs"] == pairs_from_file()


def test_the_form_lists_every_registered_strategy_with_its_parameters():
    from backtest import strategy

    param = load_daily_dag().params.get_param("strategies")
    assert param.value == [{"name": "sma_trend", "params": {}}]  # the window param fills its window
    names = param.schema["items"]["properties"]["name"]["enum"]
    assert names == strategy.names() and {"sma_trend", "vwma_trend"} <= set(names)  # built-ins and strategies/
    for described in strategy.describe_all():
        defaults = ", ".join(f"{p['name']}={p['default']}" for p in described["params"])
        assert f"{described['name']}({defaults}): {described['description']}" in param.description


def test_a_users_strategy_is_in_the_form_and_a_broken_one_does_not_break_the_dag(strategy_folder):
    drop(strategy_folder, "range_position", RANGE_POSITION)
    param = load_daily_dag().params.get_param("strategies")
    assert "range_position" in param.schema["items"]["properties"]["name"]["enum"]
    assert "range_position(window=2d, level=0.5)" in param.description

    (strategy_folder / "broken.py").write_text("raise ImportError('no module named talib')\n")
    bag = dag_bag()
    assert bag.import_errors == {} and "crypto_backtest_daily" in bag.dags  # the DAG still loads
    param = bag.dags["crypto_backtest_daily"].params.get_param("strategies")
    assert "enum" not in param.schema["items"]["properties"]["name"]  # no list to check names against
    assert "every run fails in plan until fixed" in param.description
    assert f"{strategy_folder / 'broken.py'} failed to import: ImportError: no module named talib" in param.description
