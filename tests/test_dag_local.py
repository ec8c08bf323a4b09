"""The daily DAG end to end in local mode (dag.test): synthetic data, a sweep with hold-out in chunks,
several strategies (a user's own among them) in one run, a failed pair from the Binance stand-in,
bad trigger input, a moved store."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
import pyarrow.parquet as pq
import pytest

from backtest.errors import InputError
from backtest.params import parse_time_ms
from backtest_airflow import layout
from backtest_airflow.jobs import job_pairs
from backtest_airflow.planning import make_plan
from tests.support import backtest_process, environment
from tests.support.dag import load_daily_dag, planned_run, run_daily_dag
from tests.support.strategies import BOLLINGER_PEEK_AHEAD, BOLLINGER_PEEK_NEXT, PEEK_NEXT, RANGE_POSITION, drop

PAIRS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT"]
LOGICAL_DATE = datetime.fromisoformat("2026-10-01T00:00:00+00:00")


def run_folders(data_url) -> list:
    return sorted((data_url / "results" / "crypto_backtest_daily").glob("date=*/run=*"))


@pytest.mark.slow
def test_local_run_ranks_every_pair_like_the_cli(airflow_db, tmp_path):
    data_url = tmp_path / "store"
    conf = {"pairs": PAIRS, "window": "2d", "lookback_days": 30, "rank_by": "sharpe", "fee_bps": 5}
    dag_run = run_daily_dag(data_url, conf, LOGICAL_DATE)
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
        result = json.loads((folder / "strategy=sma_trend" / f"{row['symbol']}.json").read_text())
        cli = backtest_process(
            "run", "--symbol", row["symbol"], "--data-url", str(data_url), "--start", result["start"],
            "--end", result["end"], "--window", "2d", "--fee-bps", "5", check=True,
        )  # fmt: skip
        alone = json.loads(cli.stdout)
        assert alone == result
        for metric in ("total_return", "sharpe", "max_drawdown", "trades", "bars"):
            assert row[metric] == alone[metric], (row["symbol"], metric)
        # Point in time: the window ends at the data interval's end (a manual run's interval is its date).
        assert alone["end"] == "2026-10-01T00:00:00Z" and alone["last_bar"] == "2026-09-30T23:00:00Z"
        assert alone["bars"] == 30 * 24


@pytest.mark.slow
def test_several_strategies_and_a_users_own_in_one_local_run(airflow_db, tmp_path, strategy_folder):
    """A user's strategy module on BACKTEST_STRATEGY_PATH runs beside built-ins: one job per chunk and
    strategy, each strategy's results in its folder, each equal to the CLI's for that pair alone."""
    drop(strategy_folder, "range_position", RANGE_POSITION)
    data_url = tmp_path / "store"
    pairs = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    strategies = [
        {"name": "sma_trend", "params": {}},  # the window param's 1d
        {"name": "sma_cross", "params": {"fast": "6h,12h", "slow": "1d:2d:1d"}},
        {"name": "range_position", "params": {"window": "1d", "level": [0.5, 0.8]}},
    ]
    conf = {"pairs": pairs, "strategies": strategies, "window": "1d", "lookback_days": 10, "pairs_per_job": 2}
    dag, dag_run = load_daily_dag_and_run(data_url, conf)
    plan, jobs = planned_run(dag, dag_run, data_url, conf)
    names = ["sma_trend", "sma_cross", "range_position"]
    assert [entry["name"] for entry in plan.strategies] == names
    states = {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}
    assert sorted(i for task, i in states if task == "refresh") == [0, 1]  # one per chunk ...
    assert [states["backtest", i] for i in range(6)] == ["success"] * 6  # ... one per chunk and strategy

    (folder,) = run_folders(data_url)
    for job in jobs:
        command = job["container_overrides"]["command"]
        for symbol, name in job_pairs(job):
            result = json.loads((folder / f"strategy={name}" / f"{symbol}.json").read_text())
            assert (result["symbol"], result["strategy"], result["end"]) == (symbol, name, plan.end)
            # the job's own command for this pair alone, printing instead of writing: the same result
            alone = [*command[: command.index("--symbol") + 1], symbol, *command[command.index("--symbol") + 2 :]]
            printed = backtest_process(*alone[: alone.index("--results-url")], check=True)
            assert json.loads(printed.stdout) == result
        assert (folder / f"strategy={name}" / "_jobs" / f"{job['job_name']}.json").exists()
    cross = json.loads((folder / "strategy=sma_cross" / "BTCUSDT.json").read_text())
    assert cross["grid"]["combinations"] == 4 and len(cross["sweep"]) == 4
    ranged = json.loads((folder / "strategy=range_position" / "BTCUSDT.json").read_text())
    assert ranged["params"]["window"] == "1d" and ranged["grid"]["combinations"] == 2

    # rank: every (pair, strategy) on the leaderboard
    assert dag_run.state == "success"
    board = pd.read_parquet(folder / "leaderboard.parquet")
    assert set(zip(board["symbol"], board["strategy"], strict=True)) == {(p, n) for p in pairs for n in names}
    assert (board["status"] == "ok").all()


@pytest.mark.slow
def test_walk_forward_run_ranks_on_the_stitched_figures_like_the_cli(airflow_db, tmp_path):
    """walk_forward set: every job runs it (--walk-forward), the leaderboard ranks on the stitched
    out-of-sample figures, and each (pair, strategy)'s result and stitched curve are what the job's
    own command prints and writes for that pair alone."""
    data_url = tmp_path / "store"
    strategies = [
        {"name": "sma_cross", "params": {"fast": "6h,12h", "slow": "1d:3d:1d"}},
        {"name": "momentum", "params": {"lookback": "1d"}},  # one combination: each fold "chooses" it
    ]
    conf = {"pairs": ["BTCUSDT", "ETHUSDT"], "strategies": strategies, "lookback_days": 120, "walk_forward": "60d:20d",
            "rank_by": "sharpe", "pairs_per_job": 2}  # fmt: skip
    dag, dag_run = load_daily_dag_and_run(data_url, conf)
    assert dag_run.state == "success"
    plan, jobs = planned_run(dag, dag_run, data_url, conf)
    assert (plan.walk_forward, plan.rank_on) == ("60d:20d", "out_of_sample")
    assert len(jobs) == 2

    (folder,) = run_folders(data_url)
    for job in jobs:
        command = job["container_overrides"]["command"]
        at = command.index("--walk-forward")
        assert command[at : at + 4] == ["--walk-forward", "60d:20d", "--select-by", "sharpe"]
        assert "--holdout-days" not in command
        for symbol, name in job_pairs(job):
            result = json.loads((folder / f"strategy={name}" / f"{symbol}.json").read_text())
            walk = result["walk_forward"]
            assert (walk["train"], walk["test"], walk["anchored"]) == ("60d", "20d", False)
            assert [fold["test_start"] for fold in walk["folds"]] == [
                "2026-08-02T00:00:00Z", "2026-08-22T00:00:00Z", "2026-09-11T00:00:00Z"
            ]  # fmt: skip
            assert result["oos"] == walk["stitched"] and walk["stitched"]["bars"] == 60 * 24
            # the job's own command for this pair alone, into another folder: the same result and curve
            alone = [*command[: command.index("--symbol") + 1], symbol, *command[command.index("--symbol") + 2 :]]
            alone[alone.index("--results-url") + 1] = str(tmp_path / "alone" / name)
            printed = backtest_process(*alone, check=True)
            assert json.loads(printed.stdout) == result
            stored = pq.read_table(folder / f"strategy={name}" / f"{symbol}.equity.parquet")
            assert stored.equals(pq.read_table(tmp_path / "alone" / name / f"{symbol}.equity.parquet"))
            assert stored.column_names == ["open_time", "equity", "position", "fold"]
            assert stored.column("equity")[-1].as_py() - 1 == pytest.approx(walk["stitched"]["total_return"])

    board = pd.read_parquet(folder / layout.LEADERBOARD_PARQUET)
    assert len(board) == 4 and (board["status"] == "ok").all() and board["rank"].tolist() == [1, 2, 3, 4]
    for row in board.to_dict("records"):
        result = json.loads((folder / f"strategy={row['strategy']}" / f"{row['symbol']}.json").read_text())
        assert row["oos_sharpe"] == result["walk_forward"]["stitched"]["sharpe"]
        assert row["wf_efficiency"] == result["walk_forward"]["efficiency"] or pd.isna(row["wf_efficiency"])
        assert row["wf_folds"] == 3
    sharpe = board["oos_sharpe"].tolist()
    assert sharpe == sorted(sharpe, reverse=True)  # ranked on the stitched figures
    markdown = (folder / layout.LEADERBOARD_MD).read_text()
    heads = [head.strip() for head in markdown.split("\n\n")[1].splitlines()[0].strip("|").split("|")]
    assert {"oos_sharpe", "wf_is_sharpe", "wf_efficiency", "wf_param_changes"} <= set(heads)
    page = (folder / layout.REPORT_HTML).read_text()
    assert 'id="walk-forward-table"' in page and page.count('<table class="folds"') == 4


def load_daily_dag_and_run(data_url, conf: dict):
    """The DAG parsed in local mode on synthetic candles, and one dag.test run of it."""
    settings = {"BACKTEST_EXECUTOR": "local", "BACKTEST_SOURCE": "synthetic", "BACKTEST_DATA_URL": str(data_url)}
    dag = load_daily_dag(**settings)
    return dag, dag.test(logical_date=LOGICAL_DATE, run_conf=conf)


@pytest.mark.parametrize(
    "conf, message",
    [
        ({"pairs": ["BTCUSDT", "btc-usdt"]}, "invalid symbol"),
        ({"window": "abc"}, "window: invalid window 'abc'"),
        ({"strategies": [{"name": "sma_cross", "params": {"fast": "5d", "slow": "1d"}}]}, "no valid combination"),
        ({"fee_bps": -1}, "invalid fee"),
        (
            {"walk_forward": "60d:20d", "lookback_days": 30},
            "lookback_days \\(30\\) is too short for walk_forward 60d:20d",
        ),
    ],
)
def test_bad_trigger_input_fails_in_plan_and_launches_nothing(airflow_db, tmp_path, conf, message):
    with pytest.raises(InputError, match=message):
        make_plan({"pairs": ["BTCUSDT"], **conf}, "/store", "dag", "run", LOGICAL_DATE)

    data_url = tmp_path / "store"
    dag_run = run_daily_dag(data_url, {"pairs": ["BTCUSDT"], **conf}, LOGICAL_DATE)
    assert dag_run.state == "failed"
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["plan"] == "failed"
    assert states.get("backtest") != "success"
    assert not data_url.exists()  # no refresh, no job, no results


def test_a_strategy_that_looks_ahead_fails_the_run_in_plan(airflow_db, tmp_path, strategy_folder):
    drop(strategy_folder, "peek_next", PEEK_NEXT)
    data_url = tmp_path / "store"
    conf = {"pairs": ["BTCUSDT"], "strategies": [{"name": "sma_trend"}, {"name": "peek_next"}]}
    dag_run = run_daily_dag(data_url, conf, LOGICAL_DATE)
    assert_failed_in_plan(dag_run, data_url)


def test_strategies_that_look_ahead_rarely_fail_the_run_in_plan(airflow_db, tmp_path, strategy_folder, caplog):
    """Two sparse peeks (long 1 and 5 bars before a > 3 % one-bar rise, on top of a Bollinger reversion):
    plan's quick check refuses both, at the bars before the rises (issue 20)."""
    drop(strategy_folder, "bollinger_peek_next", BOLLINGER_PEEK_NEXT)
    drop(strategy_folder, "bollinger_peek_ahead", BOLLINGER_PEEK_AHEAD)
    data_url = tmp_path / "store"
    names = ["bollinger_peek_next", "bollinger_peek_ahead"]
    conf = {"pairs": ["BTCUSDT"], "strategies": [{"name": "sma_trend"}, *({"name": name} for name in names)]}
    with caplog.at_level("ERROR"):
        dag_run = run_daily_dag(data_url, conf, LOGICAL_DATE)
    assert_failed_in_plan(dag_run, data_url)
    (failed,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("look-ahead check failed: ")]
    assert [problem.split(":")[0] for problem in failed.removeprefix("look-ahead check failed: ").split("; ")] == [
        f"{name} window=1d width=2.0 rise=3.0" for name in names
    ]


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


@pytest.mark.slow
def test_dag_sweep_holdout_and_chunks(airflow_db, tmp_path):
    data_url = tmp_path / "store"
    pairs = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT"]
    conf = {
        "pairs": pairs,
        "window": "1d,2d,4d",
        "lookback_days": 20,
        "holdout_days": 5,
        "rank_by": "sharpe",
        "rank_on": "out_of_sample",
        "pairs_per_job": 2,
    }
    dag_run = run_daily_dag(data_url, conf, LOGICAL_DATE)
    assert dag_run.state == "success"
    mapped = [ti for ti in dag_run.get_task_instances() if ti.task_id in ("refresh", "backtest")]
    assert len(mapped) == 2 * 3  # 5 pairs in chunks of 2: 3 refresh + 3 backtest task instances

    (folder,) = (data_url / "results" / "crypto_backtest_daily").glob("date=*/run=*")
    # the leaderboard: each pair's chosen window; every (pair, window) row in the run's grid file
    best = pd.read_parquet(folder / layout.LEADERBOARD_PARQUET)
    assert len(best) == 5 and len(pd.read_parquet(folder / layout.GRID_PARQUET)) == 5 * 3
    assert best["rank"].tolist() == [1, 2, 3, 4, 5]
    assert best["oos_sharpe"].tolist() == sorted(best["oos_sharpe"], reverse=True)
    summary = json.loads((folder / "summary.json").read_text())["cost"]
    assert summary["pairs"] == 5 and summary["jobs"] == 3 and summary["vcpu_seconds"] > 0


@pytest.mark.slow
def test_dag_lists_a_failed_pair_without_losing_its_chunk(airflow_db, tmp_path, exchange_factory):
    exchange = exchange_factory(symbols=("BTCUSDT", "ETHUSDT"), now_ms=parse_time_ms("2026-06-20T12:30:00Z"))
    data_url = tmp_path / "store"
    with environment(BINANCE_API_URL=exchange.url):
        conf = {"pairs": ["BTCUSDT", "NOPEUSDT", "ETHUSDT"], "window": "1d", "lookback_days": 10, "pairs_per_job": 3}
        as_of = datetime.fromisoformat("2026-06-20T00:00:00+00:00")
        dag_run = run_daily_dag(data_url, conf, as_of, BACKTEST_SOURCE="binance")
    assert dag_run.state == "failed"
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == {
        "plan": "success",
        "chunks": "success",
        "jobs": "success",
        "refresh": "failed",
        "candles": "skipped",  # its one chunk failed: no pair is known fresh, no candles event
        "backtest": "failed",
        "rank": "failed",
    }
    (folder,) = (data_url / "results" / "crypto_backtest_daily").glob("date=*/run=*")
    board = pd.read_parquet(folder / "leaderboard.parquet").set_index("symbol")
    assert board.loc["BTCUSDT", "status"] == "ok" and board.loc["ETHUSDT", "status"] == "ok"
    assert board.loc["NOPEUSDT", "status"].startswith("failed: no candles stored for NOPEUSDT")
    assert board.loc["BTCUSDT", "synthetic"] == False  # noqa: E712 (numpy bool)


def assert_failed_in_plan(dag_run, data_url) -> None:
    """The run failed in plan, before any refresh, job or result."""
    assert dag_run.state == "failed"
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["plan"] == "failed" and states.get("backtest") != "success"
    assert not data_url.exists()  # no refresh, no job, no results
