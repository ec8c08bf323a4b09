"""Every DAG file imports cleanly and carries the basics: tags, retries, docs, a start date."""

from __future__ import annotations

import pytest

from tests.conftest import REPO


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
        assert dag.default_args.get("retries", 0) >= 0 and "retry_delay" in dag.default_args, dag_id
        assert dag.catchup is False, dag_id
        assert dag.start_date is not None, dag_id


def test_daily_dag_shape(dags):
    dag = dags["crypto_backtest_daily"]
    assert str(dag.schedule) == "@daily" or getattr(dag.timetable, "summary", "") == "@daily"
    assert set(dag.task_dict) == {"plan", "refresh", "backtest", "rank"}
    assert dag.task_dict["refresh"].upstream_task_ids == {"plan"}
    assert dag.task_dict["backtest"].upstream_task_ids == {"plan", "refresh"}
    assert dag.task_dict["rank"].upstream_task_ids == {"plan", "backtest"}
    assert dag.task_dict["rank"].trigger_rule == "all_done"
    assert set(dag.params) == {
        "pairs",
        "window",
        "fee_bps",
        "lookback_days",
        "rank_by",
        "allow_failed_pairs",
        "holdout_days",
        "rank_on",
        "pairs_per_job",
    }
    assert dag.default_args["retries"] == 0  # BACKTEST_TASK_RETRIES=0 in tests; production default 2
