"""The daily DAG end to end in local mode (dag.test, synthetic data), and bad trigger input."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import pandas as pd
import pytest

from backtest.errors import InputError
from backtest_airflow.planning import as_of, job_kwargs, make_plan
from tests.airflow_helpers import environment, load_daily_dag
from tests.conftest import REPO

PAIRS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT"]
LOGICAL_DATE = datetime.fromisoformat("2026-10-01T00:00:00+00:00")


def run_folders(data_url) -> list:
    return sorted((data_url / "results" / "crypto_backtest_daily").glob("date=*/run=*"))


@pytest.mark.slow
def test_local_run_ranks_every_pair_like_the_cli(airflow_db, tmp_path):
    data_url = tmp_path / "store"
    dag = load_daily_dag(BACKTEST_EXECUTOR="local", BACKTEST_SOURCE="synthetic", BACKTEST_DATA_URL=str(data_url))
    conf = {"pairs": PAIRS, "window": "2d", "lookback_days": 30, "rank_by": "sharpe", "fee_bps": 5}
    dag_run = dag.test(logical_date=LOGICAL_DATE, run_conf=conf)
    assert dag_run.state == "success"

    (folder,) = run_folders(data_url)
    assert folder.parent.name == "date=2026-10-01"
    board = pd.read_parquet(folder / "leaderboard.parquet")
    assert sorted(board["symbol"]) == sorted(PAIRS)
    assert (board["status"] == "ok").all() and board["synthetic"].all()
    assert board["rank"].tolist() == [1, 2, 3, 4, 5]
    sharpe = board["sharpe"].tolist()
    assert sharpe == sorted(sharpe, reverse=True)
    assert (folder / "leaderboard.csv").read_text().count("\n") == len(PAIRS) + 1
    markdown = (folder / "leaderboard.md").read_text()
    assert markdown.startswith("# Leaderboard") and all(f"| {pair}" in markdown for pair in PAIRS)

    # Each row equals what `python -m backtest run` prints for that pair and window by itself.
    for row in board.to_dict("records"):
        result = json.loads((folder / f"{row['symbol']}.json").read_text())
        cli = subprocess.run(
            [sys.executable, "-m", "backtest", "run", "--symbol", row["symbol"], "--data-url", str(data_url)]
            + ["--start", result["start"], "--end", result["end"], "--window", "2d", "--fee-bps", "5"],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        )
        alone = json.loads(cli.stdout)
        assert alone == result
        for metric in ("total_return", "sharpe", "max_drawdown", "trades", "bars"):
            assert row[metric] == alone[metric], (row["symbol"], metric)
        # Point in time: the window ends at the data interval's end (a manual run's interval is its date).
        assert alone["end"] == "2026-10-01T00:00:00Z" and alone["last_bar"] == "2026-09-30T23:00:00Z"
        assert alone["bars"] == 30 * 24


@pytest.mark.parametrize(
    "conf, message",
    [
        ({"pairs": ["BTCUSDT", "btc-usdt"]}, "invalid symbol"),
        ({"window": "abc"}, "invalid window"),
        ({"fee_bps": -1}, "invalid fee"),
    ],
)
def test_bad_trigger_input_fails_in_plan_and_launches_nothing(airflow_db, tmp_path, conf, message):
    with pytest.raises(InputError, match=message):
        make_plan({"pairs": ["BTCUSDT"], **conf}, "/store", "dag", "run", LOGICAL_DATE)

    data_url = tmp_path / "store"
    dag = load_daily_dag(BACKTEST_EXECUTOR="local", BACKTEST_DATA_URL=str(data_url))
    dag_run = dag.test(logical_date=LOGICAL_DATE, run_conf={"pairs": ["BTCUSDT"], **conf})
    assert dag_run.state == "failed"
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["plan"] == "failed"
    assert states.get("backtest") != "success"
    assert not data_url.exists()  # no refresh, no job, no results


def test_plan_renders_the_container_command():
    end = datetime.fromisoformat("2026-10-02T00:00:00+00:00")
    plan = make_plan(
        {"pairs": ["BTCUSDT"], "window": "15d", "fee_bps": 10, "lookback_days": 90},
        "s3://bucket/data",
        "crypto_backtest_daily",
        "scheduled__2026-10-02T00:00:00+00:00",
        end,
    )
    assert plan.results_url == (
        "s3://bucket/data/results/crypto_backtest_daily/date=2026-10-02/run=scheduled__2026-10-02T00-00-00-00-00"
    )
    assert plan.history_days == 90 + 15 + 1
    (job,) = job_kwargs(plan, "s3://bucket/data", "scheduled__2026-10-02T00:00:00+00:00")
    assert job["container_overrides"]["command"] == [
        "run",
        "--symbol",
        "BTCUSDT",
        "--data-url",
        "s3://bucket/data",
        "--start",
        "2026-07-04T00:00:00Z",
        "--end",
        "2026-10-02T00:00:00Z",
        "--window",
        "15d",
        "--fee-bps",
        "10",
        "--results-url",
        plan.results_url,
    ]
    assert job["job_name"].startswith("backtest-BTCUSDT-20261002-") and len(job["job_name"]) <= 128


@pytest.mark.parametrize(
    "interval_end, logical_date, run_after, expected",
    [
        # scheduled or backfill run of D (@daily: a zero-length interval at D 00:00)
        ("2026-10-02T00:00:00+00:00", "2026-10-02T00:00:00+00:00", "2026-10-02T00:00:00+00:00", "2026-10-02T00:00:00"),
        # a trigger at 20:58 with that logical date: the candle opened at 20:00 has not closed
        (None, "2026-10-02T20:58:31+00:00", "2026-10-02T20:58:31+00:00", "2026-10-02T20:00:00"),
        # a trigger with no logical date (`airflow dags trigger`, REST `"logical_date": null`)
        (None, None, "2026-10-02T07:59:59.999+00:00", "2026-10-02T07:00:00"),
        # another time zone: the same instant, in UTC
        (None, "2026-10-02T09:30:00+02:00", "2026-10-02T09:30:00+02:00", "2026-10-02T07:00:00"),
    ],
)
def test_a_runs_as_of_moment_is_its_interval_end_logical_date_or_run_after_down_to_the_hour(
    interval_end, logical_date, run_after, expected
):
    parse = lambda text: text and datetime.fromisoformat(text)  # noqa: E731
    moment = as_of(parse(interval_end), parse(logical_date), parse(run_after))
    assert moment.tzinfo is not None and moment.utcoffset().total_seconds() == 0
    assert moment.replace(tzinfo=None).isoformat() == expected


def test_unknown_param_keys_are_refused_with_every_other_problem():
    with pytest.raises(InputError) as caught:
        make_plan({"pairs": [], "windw": "5d", "fee_bps": -1}, "/store", "dag", "run", LOGICAL_DATE)
    message = str(caught.value)
    assert "unknown param(s) 'windw'" in message
    assert "pairs must be a non-empty list" in message and "invalid fee" in message
    assert "\n" not in message  # one line


@pytest.mark.slow
def test_moving_the_store_between_runs_in_one_airflow_home_works(airflow_db, tmp_path):
    """Assets are named by their URIs: a new BACKTEST_DATA_URL is a new asset, not a clash with the old one."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    conf = {"pairs": ["BTCUSDT", "ETHUSDT"], "window": "48", "lookback_days": 10}
    for name in ("first", "second"):
        data_url = tmp_path / name
        settings = {"BACKTEST_EXECUTOR": "local", "BACKTEST_SOURCE": "synthetic", "BACKTEST_DATA_URL": str(data_url)}
        with environment(**settings):  # dag.test parses the DAG folder again: the same settings, as in `make demo`
            dag_run = load_daily_dag().test(logical_date=LOGICAL_DATE, run_conf=conf)
        assert dag_run.state == "success", name
        (folder,) = run_folders(data_url)
        assert (folder / "leaderboard.parquet").exists()
        with create_session() as session:
            events = session.scalars(
                select(AssetEvent)
                .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .where(AssetModel.uri == f"file://{data_url}/candles", AssetEvent.source_run_id == dag_run.run_id)
            ).all()
            # one candles event for the run (not one per chunk), saying which pairs are fresh, up to when
            assert [event.extra for event in events] == [
                {"end": "2026-10-01T00:00:00Z", "pairs": conf["pairs"], "failed": []}
            ]


@pytest.mark.parametrize("fee", [12.3456789, 0.1 + 0.2, 1e-05, 999.9999999999])
def test_plan_passes_the_fee_with_every_digit(fee):
    """`%g` sent 12.3456789 as 12.3457; the job must get the very float the user gave."""
    day = datetime.fromisoformat("2026-10-01T00:00:00+00:00")
    plan = make_plan({"pairs": ["BTCUSDT"], "fee_bps": fee}, "/store", "dag", "run", day)
    (job,) = job_kwargs(plan, "/store", "run")
    command = job["container_overrides"]["command"]
    sent = command[command.index("--fee-bps") + 1]
    assert float(sent) == fee
