"""Alerts (backtest_airflow/alerts.py) published to moto's SNS and read back from SQS.

The alerts come from real runs of the project's DAG (wired with the callbacks in its file), with
the context Airflow gives the callbacks, and travel through the amazon provider's `SnsNotifier` to
a topic on the moto server, which delivers them to a subscribed SQS queue (not raw: the SNS
envelope, with `Subject`). The notifier reaches moto only through the Airflow connection
`BACKTEST_AWS_CONN_ID` names (`AWS_ENDPOINT_URL` is unset meanwhile). One test sends a text itself:
braces and non-ASCII must arrive verbatim.

Two ways the DAG-level callbacks get their context:

- `dag.test()` calls them itself, in the test process, with the context Airflow builds for them
  (the template context of the run's last failed or last succeeded task instance, plus `reason`)
  but without the task API: `xcom_pull` and `get_task_states` have nothing to talk to there. So
  a failure alert names only that task instance, without its error text.
- A real scheduler (api-server, scheduler, dag-processor as separate processes): the callbacks run
  in the dag-processor, as in production, where the context's `ti` reaches the task API. The
  failure alert lists every failed task with the error text `record_task_error` kept.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import boto3
import pandas as pd
import pytest

from backtest.params import parse_time_ms
from backtest_airflow import alerts
from backtest_airflow.layout import run_folder_name
from backtest_airflow.settings import load_settings
from tests.support import aws_env, environment, free_port
from tests.support.dag import load_daily_dag, run_daily_dag
from tests.support.live_airflow import LiveAirflow

DAG_ID = "crypto_backtest_daily"
CONN_ID = "aws_alerts"
NOW = "2026-06-20T12:30:00Z"  # the Binance stand-in's clock
LOGICAL_DATE = datetime.fromisoformat("2026-06-20T00:00:00+00:00")
PAIRS = ["BTCUSDT", "ETHUSDT", "NOPEUSDT"]  # the stand-in lists the first two only
CONF = {"pairs": PAIRS, "window": "1d", "lookback_days": 10, "rank_by": "sharpe", "pairs_per_job": 3}
BAD_CONF = {"pairs": ["BTCUSDT", "btc-usdt"]}


@dataclass(frozen=True)
class Inbox:
    """An SNS topic on moto with an SQS queue subscribed to it."""

    topic_arn: str
    sqs: object
    queue_url: str

    def messages(self, count: int, timeout: float = 30) -> list[dict]:
        """Exactly `count` notifications (waits for them; then checks that no other one follows)."""
        bodies, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline and len(bodies) < count:
            bodies += self._receive(wait=1)
        bodies += self._receive(wait=1)
        assert len(bodies) == count, bodies
        return [json.loads(body) for body in bodies]

    def _receive(self, wait: int) -> list[str]:
        response = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
        for message in response.get("Messages", []):
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return [message["Body"] for message in response.get("Messages", [])]


@pytest.fixture
def inbox(moto_server) -> Inbox:
    name = f"alerts-{uuid.uuid4().hex[:8]}"
    sns = boto3.client("sns", endpoint_url=moto_server, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    topic_arn = sns.create_topic(Name=name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return Inbox(topic_arn, sqs, queue_url)


def aws_connection(moto_server: str) -> str:
    return json.dumps({"conn_type": "aws", "extra": {"endpoint_url": moto_server, "region_name": "us-east-1"}})


@pytest.fixture
def notify(inbox, moto_server, monkeypatch) -> Inbox:
    """Alerts on: the topic set, moto reachable through the Airflow connection only."""
    monkeypatch.setenv("BACKTEST_NOTIFY_SNS_TOPIC_ARN", inbox.topic_arn)
    monkeypatch.setenv("BACKTEST_AWS_CONN_ID", CONN_ID)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", aws_connection(moto_server))
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    return inbox


def run_dag(data_url: Path, conf: dict, exchange=None):
    """The project's DAG under dag.test(), local mode; with `exchange`, candles from the stand-in."""
    if exchange is None:
        return run_daily_dag(data_url, conf, LOGICAL_DATE)
    with environment(BINANCE_API_URL=exchange.url):
        return run_daily_dag(data_url, conf, LOGICAL_DATE, BACKTEST_SOURCE="binance")


def results_folder(data_url: Path, run_id: str, date: str = "2026-06-20") -> Path:
    return data_url / "results" / DAG_ID / f"date={date}" / f"run={run_folder_name(run_id)}"


def heading(run_id: str, outcome: str, date: str = "2026-06-20") -> list[str]:
    """The first two lines of a run's alert or digest."""
    logical = f"{date}T00:00:00+00:00"
    return [f"DAG {DAG_ID}, run {run_id}: {outcome}", f"Logical date {logical}, as of {logical}"]


def digest_lines(folder: Path, metric: str) -> list[str]:
    """What the digest must say about the pairs and the cost, from the files rank wrote."""
    board = pd.read_parquet(folder / "leaderboard.parquet")
    ranked = board[board["rank"].notna()].sort_values("rank")
    lines = [f"Top {len(ranked)} of {len(ranked)} by {metric}:"]
    for row in ranked.to_dict("records"):
        lines.append(
            f"{row['rank']:>3}. {row['symbol']:<12} {row[metric]:.2f} (total return {row['total_return']:.2%})"
        )
    failed = board[board["best"] & (board["status"] != "ok")]
    lines.append(f"Failed pairs ({len(failed)} of {len(PAIRS)}):")
    lines += [f"- {row['symbol']}: {row['status']}" for row in failed.to_dict("records")]
    lines.append(f"Cost: {json.loads((folder / 'summary.json').read_text())['cost']['text']}")
    lines.append(f"Report: {folder / 'report.html'}")
    return lines


def test_dag_test_failed_run_publishes_an_alert(airflow_db, tmp_path, notify):
    """Bad trigger input: plan fails and nothing after it runs; one alert."""
    dag_run = run_dag(tmp_path / "store", BAD_CONF)
    assert dag_run.state == "failed"

    (message,) = notify.messages(1)
    assert message["TopicArn"] == notify.topic_arn
    assert message["Subject"] == f"{DAG_ID} failed: {dag_run.run_id}"
    assert message["Message"].splitlines() == [
        *heading(dag_run.run_id, "FAILED (task_failure)"),
        "",
        "Failed tasks (1):",
        "- plan: no error text here, see the task log",  # the context's task: the last to fail; no task API
    ]


@pytest.mark.slow
def test_dag_test_runs_publish_the_digest_and_the_failed_pairs(airflow_db, tmp_path, notify, exchange_factory):
    """A pair the exchange does not list: the digest (allow_failed_pairs), then a failed run, each one message."""
    exchange = exchange_factory(symbols=("BTCUSDT", "ETHUSDT"), now_ms=parse_time_ms(NOW))
    data_url = tmp_path / "store"

    succeeded = run_dag(data_url, {**CONF, "allow_failed_pairs": True}, exchange)
    assert succeeded.state == "success"
    (digest,) = notify.messages(1)
    assert digest["Subject"] == f"{DAG_ID} succeeded: {succeeded.run_id}"
    lines = digest["Message"].splitlines()
    assert lines[:2] == heading(succeeded.run_id, "succeeded")
    assert [line for line in lines[2:] if line] == digest_lines(results_folder(data_url, succeeded.run_id), "sharpe")
    assert "- NOPEUSDT: failed: no candles stored for NOPEUSDT" in digest["Message"]

    failed = run_dag(data_url, CONF, exchange)  # without allow_failed_pairs, the same failed pair fails the run
    assert failed.state == "failed"
    (alert,) = notify.messages(1)
    assert alert["Subject"] == f"{DAG_ID} failed: {failed.run_id}"
    body = alert["Message"]
    assert f"run {failed.run_id}: FAILED (task_failure)" in body
    assert "Failed tasks (1):\n- rank: no error text here, see the task log" in body
    folder = results_folder(data_url, failed.run_id)
    assert "Failed pairs (1 of 3):\n- NOPEUSDT: failed: no candles stored for NOPEUSDT" in body
    assert body.endswith(f"Report: {folder / 'report.html'}")


def test_without_a_topic_an_alert_is_one_log_line(airflow_db, tmp_path, caplog, monkeypatch):
    """No BACKTEST_NOTIFY_SNS_TOPIC_ARN: one INFO line from the alerts logger, nothing else from it."""
    monkeypatch.delenv("BACKTEST_NOTIFY_SNS_TOPIC_ARN", raising=False)
    # Airflow replaces the root logger's handlers (caplog's too) when it first sets up logging: the
    # capture goes on the alerts logger itself.
    logger = logging.getLogger(alerts.__name__)
    monkeypatch.setattr(logger, "propagate", False)
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=alerts.__name__):
            dag_run = run_dag(tmp_path / "store", BAD_CONF)
    finally:
        logger.removeHandler(caplog.handler)
    assert dag_run.state == "failed"
    (record,) = [r for r in caplog.records if r.name == alerts.__name__]
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        f"{DAG_ID} failed: {dag_run.run_id} | DAG {DAG_ID}, run {dag_run.run_id}: FAILED (task_failure)"
        " | Logical date 2026-06-20T00:00:00+00:00, as of 2026-06-20T00:00:00+00:00"
        " | Failed tasks (1): | - plan: no error text here, see the task log"
    )


def test_message_text_is_sent_verbatim_and_the_subject_fits_sns(notify):
    """SnsNotifier renders its fields as Jinja: the texts must not be templates; SNS wants an ASCII subject."""
    dag = load_daily_dag(BACKTEST_EXECUTOR="local")
    body = "ValueError: {{ not a template }} {% if %} ünïcode\nsecond line"
    subject = "é" * 150
    alerts.send(subject, body, {"dag": dag, "run_id": "r"}, load_settings())
    (message,) = notify.messages(1)
    assert message["Message"] == body
    assert message["Subject"] == "?" * 97 + "..."


def test_with_several_strategies_the_digest_names_pair_and_strategy():
    """A leaderboard row is a (pair, strategy) when a run has several strategies; one strategy: as before."""
    board = pd.DataFrame(
        {
            "rank": [1, 2, None],
            "symbol": ["BTCUSDT", "BTCUSDT", "ETHUSDT"],
            "strategy": ["sma_cross", "sma_trend", "sma_cross"],
            "status": ["ok", "ok", "failed: backtest task failed"],
            "best": True,
            "sharpe": [1.5, 0.25, None],
            "total_return": [0.1, 0.02, None],
        }
    )
    context = {"run_id": "r", "params": {"rank_by": "sharpe"}}
    _, body = alerts.success_message(context, board, None, None)
    assert "  1. BTCUSDT sma_cross 1.50 (total return 10.00%)" in body.splitlines()
    assert "  2. BTCUSDT sma_trend 0.25 (total return 2.00%)" in body.splitlines()
    assert "Failed (pair, strategy) rows (1 of 3):\n- ETHUSDT sma_cross: failed: backtest task failed" in body
    one = board[board["strategy"] == "sma_cross"]
    _, body = alerts.success_message(context, one, None, None)
    assert "  1. BTCUSDT      1.50 (total return 10.00%)" in body.splitlines()
    assert "Failed pairs (1 of 2):\n- ETHUSDT: failed: backtest task failed" in body


def test_with_a_walk_forward_the_digest_ranks_on_the_stitched_figures():
    """The run's params may still say rank_on in_sample (the form's default): a walk-forward ranks out of sample."""
    board = pd.DataFrame(
        {"rank": [1, 2], "symbol": ["BTCUSDT", "ETHUSDT"], "status": "ok", "best": True, "sharpe": [0.5, 2.0],
         "oos_sharpe": [1.25, -0.5], "total_return": [0.1, 0.3]}
    )  # fmt: skip
    params = {"rank_by": "sharpe", "rank_on": "in_sample", "walk_forward": "60d:20d"}
    _, body = alerts.success_message({"run_id": "r", "params": params}, board, None, None)
    assert "Top 2 of 2 by oos_sharpe:" in body
    assert "  1. BTCUSDT      1.25 (total return 10.00%)" in body.splitlines()
    _, body = alerts.success_message({"run_id": "r", "params": {**params, "walk_forward": ""}}, board, None, None)
    assert "Top 2 of 2 by sharpe:" in body


# ---------------------------------------------------------------------------------- a real scheduler


@pytest.fixture
def scheduler(tmp_path_factory, inbox, moto_server, exchange_factory):
    """`make airflow` (tests/support/live_airflow.py) with alerts on, candles from the Binance stand-in."""
    exchange = exchange_factory(symbols=("BTCUSDT", "ETHUSDT"), now_ms=parse_time_ms(NOW))
    settings = {
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "BACKTEST_EXECUTOR": "local",
        "BACKTEST_SOURCE": "binance",
        "BINANCE_API_URL": exchange.url,
        "BACKTEST_TASK_RETRIES": "0",
        "BACKTEST_NOTIFY_SNS_TOPIC_ARN": inbox.topic_arn,
        "BACKTEST_AWS_CONN_ID": CONN_ID,
        f"AIRFLOW_CONN_{CONN_ID.upper()}": aws_connection(moto_server),  # the only way to moto
        **aws_env(),
    }
    with LiveAirflow(
        home=tmp_path_factory.mktemp("airflow-alerts-home"), port=free_port(), extra_env=settings
    ) as stack:
        yield stack


@pytest.mark.slow
def test_in_a_real_scheduler_the_dag_processor_publishes_the_alerts(scheduler, inbox):
    """Three runs through the REST API: bad input, a digest with a failed pair, a run failed by that pair."""
    scheduler.unpause()
    confs = {
        "2026-06-18T00:00:00Z": BAD_CONF,
        "2026-06-19T00:00:00Z": {**CONF, "allow_failed_pairs": True},
        "2026-06-20T00:00:00Z": CONF,
    }
    run_ids = [scheduler.trigger(conf, date)["dag_run_id"] for date, conf in confs.items()]
    runs = {run["logical_date"]: run for run in scheduler.wait_for_runs(run_ids, timeout=300)}
    assert [runs[date]["state"] for date in confs] == ["failed", "success", "failed"]
    messages = {message["Subject"]: message["Message"] for message in inbox.messages(3, timeout=90)}

    bad, good, failed = (runs[date] for date in confs)
    lines = messages[f"{DAG_ID} failed: {bad['dag_run_id']}"].splitlines()
    assert lines[:4] == [
        *heading(bad["dag_run_id"], "FAILED (task_failure)", "2026-06-18"),
        "",
        "Failed tasks (1):",  # nothing after plan ran
    ]
    assert lines[4].startswith(
        "- plan: AirflowFailException: invalid params: invalid symbol(s) 'btc-usdt': each must match ^[A-Z0-9]{2,20}$"
    )
    assert len(lines) == 5  # no leaderboard, no report

    lines = messages[f"{DAG_ID} succeeded: {good['dag_run_id']}"].splitlines()
    assert lines[:2] == heading(good["dag_run_id"], "succeeded", "2026-06-19")
    folder = results_folder(scheduler.store, good["dag_run_id"], "2026-06-19")
    assert [line for line in lines[2:] if line] == digest_lines(folder, "sharpe")

    body = messages[f"{DAG_ID} failed: {failed['dag_run_id']}"]
    folder = results_folder(scheduler.store, failed["dag_run_id"], "2026-06-20")
    tasks = body.split("Failed tasks (3):\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [task.split(":", 1)[0] for task in tasks] == ["- refresh[0]", "- backtest[0]", "- rank"]  # DAG order
    assert tasks[0].startswith("- refresh[0]: AirflowFailException: NOPEUSDT: Binance does not know the symbol")
    assert tasks[1].startswith("- backtest[0]: AirflowFailException: job backtest-BTCUSDT-plus2-")
    assert "exited with code 3" in tasks[1] and "no candles stored for NOPEUSDT" in tasks[1]
    assert tasks[2] == "- rank: AirflowFailException: 1 pair(s) failed: NOPEUSDT (leaderboard written)"
    assert (
        f"\n\nFailed pairs (1 of 3):\n- NOPEUSDT: failed: no candles stored for NOPEUSDT under {scheduler.store}"
        in body
    )
    assert body.endswith(f"\n\nReport: {folder / 'report.html'}")
