"""The daily DAG in batch mode against moto's AWS Batch: what tests/test_dag_batch.py and
tests/test_infra.py (the DAG on the CloudFormation stack's outputs) share."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from backtest_airflow.jobs import job_pairs
from backtest_airflow.layout import strategy_results_url
from backtest_airflow.planning import RunPlan
from tests.support.dag import load_daily_dag, planned_run

PAIRS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
CONF = {"pairs": PAIRS, "lookback_days": 30}
LOGICAL_DATE = datetime(2026, 10, 1, tzinfo=UTC)
CONN_ID = "aws_moto"
POLL_SECONDS = 1


@dataclass(frozen=True)
class Batch:
    client: object
    queue: str
    queue_arn: str
    job_definition: str
    job_definition_arn: str


@contextmanager
def moto_batch_without_docker(endpoint: str) -> Iterator[None]:
    """moto's Batch runs no container: a submitted job just ends SUCCEEDED (or FAILED with
    MOTO_SIMPLE_BATCH_FAIL_AFTER=0), inside the SubmitJob call. Its setting restored after the block."""

    def config(body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        request = urllib.request.Request(f"{endpoint}/moto-api/config", data, headers, method="POST" if data else "GET")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    saved = config()
    config({"batch": {"use_docker": False}})
    try:
        yield
    finally:
        config({"batch": saved["batch"]})


def run_batch_dag(batch: Batch, data_url, moto_server: str, monkeypatch, conf: dict = CONF):
    connection = {"conn_type": "aws", "extra": {"endpoint_url": moto_server, "region_name": "us-east-1"}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the connection leads to moto
    dag = load_daily_dag(
        BACKTEST_EXECUTOR="batch",
        BACKTEST_BATCH_JOB_QUEUE=batch.queue,
        BACKTEST_BATCH_JOB_DEFINITION=batch.job_definition,
        BACKTEST_AWS_CONN_ID=CONN_ID,
        BACKTEST_BATCH_POLL_SECONDS=str(POLL_SECONDS),
        BACKTEST_SOURCE="synthetic",
        BACKTEST_DATA_URL=str(data_url),
    )
    return dag, dag.test(logical_date=LOGICAL_DATE, run_conf=conf)


def planned(dag, dag_run, data_url, conf: dict = CONF) -> tuple[RunPlan, list[dict]]:
    """The run's plan and jobs as `planning` and `jobs` make them (what local mode would run)."""
    return planned_run(dag, dag_run, data_url, conf)


def submitted_jobs(batch: Batch) -> list[dict]:
    summaries = batch.client.list_jobs(jobQueue=batch.queue, filters=[{"name": "JOB_NAME", "values": ["*"]}])
    ids = [job["jobId"] for job in summaries["jobSummaryList"]]
    return batch.client.describe_jobs(jobs=ids)["jobs"] if ids else []


def environment_of(job: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in job["container"]["environment"]}


def assert_jobs_are_the_plans(batch: Batch, plan: RunPlan, jobs: list[dict], status: str) -> dict[str, dict]:
    """One Batch job per planned job, on the configured queue and definition, with the planned command."""
    described = submitted_jobs(batch)
    # up to 40 pairs x strategies: one pair a job, once per strategy
    assert len(described) == len(jobs) == len(plan.pairs) * len(plan.strategies)
    by_name = {job["jobName"]: job for job in described}
    assert sorted(by_name) == sorted(job["job_name"] for job in jobs)
    for job in jobs:
        submitted = by_name[job["job_name"]]
        assert submitted["jobQueue"] == batch.queue_arn
        assert submitted["jobDefinition"] == batch.job_definition_arn
        assert submitted["status"] == status
        assert submitted["container"]["command"] == job["container_overrides"]["command"]
        ((_, strategy), *_) = job_pairs(job)  # each strategy's results in its folder of the run
        assert strategy_results_url(plan.results_url, strategy) in submitted["container"]["command"]
        planned_env = {item["name"]: item["value"] for item in job["container_overrides"]["environment"]}
        assert planned_env.items() <= environment_of(submitted).items()
        assert submitted["tags"] == job["tags"]
    return by_name
