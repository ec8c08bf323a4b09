"""The execution options through the DAG: the `strategies` entries' direction, stops, size, borrow
and label, the run-wide `slippage_bps`; `plan` refuses what the job would (in one message), the
rendered commands carry the options, and two labels of one strategy run side by side."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
import pytest

from backtest_airflow.jobs import job_kwargs, job_pairs, job_units
from backtest_airflow.report.results import strategies_text
from tests.support import backtest_process
from tests.support.dag import run_daily_dag
from tests.test_planning import plan_of, problems_of

LONG_SHORT = {"name": "sma_trend", "label": "sma_ls", "direction": "long_short", "sl": "3%,6%", "tp": 0.1}


def test_entries_carry_their_execution_and_label():
    plan = plan_of(strategies=[{"name": "sma_trend"}, LONG_SHORT], slippage_bps=2.5)
    assert [(e["label"], e["execution"]) for e in plan.strategies] == [
        ("sma_trend", {}),
        ("sma_ls", {"direction": "long_short", "sl": "3%,6%", "tp": "0.1"}),
    ]
    assert plan.slippage_bps == 2.5
    assert (
        strategies_text(plan.strategies)
        == "sma_trend window=15d; sma_ls=sma_trend window=15d direction=long_short sl=3%,6% tp=0.1"
    )
    jobs = job_kwargs(plan, "/store", "run-1")
    commands = [job["container_overrides"]["command"] for job in jobs]
    assert [c[c.index("--results-url") + 1].rsplit("/", 1)[1] for c in commands] == [
        "strategy=sma_trend",
        "strategy=sma_ls",
    ]
    plain, traded = commands
    assert "--direction=long_short" in traded and "--sl=3%,6%" in traded and "--tp=0.1" in traded
    assert not any(arg.startswith(("--direction=", "--sl=", "--tp=")) for arg in plain)
    assert all(c[c.index("--slippage-bps") + 1] == "2.5" for c in commands)
    assert "--holdout-days" in traded  # a grid of stop levels selects like a parameter grid
    assert len({job["job_name"] for job in jobs}) == 2
    assert job_units(plan) == [[("BTCUSDT", "sma_trend")], [("BTCUSDT", "sma_ls")]]
    assert [job_pairs(job) for job in jobs] == job_units(plan)
    assert "--slippage-bps" not in job_kwargs(plan_of(), "/store", "run-1")[0]["container_overrides"]["command"]


def test_every_bad_execution_option_is_one_problem_in_one_message():
    message = problems_of(
        strategies=[
            {"name": "sma_trend", "direction": "both"},
            {"name": "sma_cross", "sl": "150%"},
            {"name": "momentum", "label": "m2", "size": 0},
            {"name": "ema_trend", "label": "Bad Label"},
            {"name": "rsi_reversion", "trail": True},
        ],
        slippage_bps=-1,
    )
    for part in (
        "slippage_bps '-1'",
        "sma_trend: invalid --direction 'both'",
        "sma_cross: invalid --sl '150%'",
        "m2: invalid --size '0'",
        "label 'Bad Label'",
        "rsi_reversion trail: must be a number or text",
    ):
        assert part in message, (part, message)


def test_labels_are_listed_once_and_a_short_side_needs_a_strategy_with_one(strategy_folder):
    assert "strategy 'sma_trend' is listed twice: give each entry of one strategy its own label" in problems_of(
        strategies=[{"name": "sma_trend"}, {"name": "sma_trend", "direction": "long_short"}]
    )
    assert "strategy 'x' is listed twice" in problems_of(
        strategies=[{"name": "sma_trend", "label": "x"}, {"name": "momentum", "label": "x"}]
    )
    (strategy_folder / "long_only_dag.py").write_text(
        "import numpy as np\nfrom backtest.strategy import strategy\n\n"
        '@strategy(name="long_only_dag", params=[], warmup=lambda p: 0)\n'
        "def long_only_dag(candles):\n    return candles.close > candles.open\n"
    )
    message = problems_of(strategies=[{"name": "long_only_dag", "direction": "short"}])
    assert "long_only_dag: --direction short needs a short side: strategy long_only_dag" in message


@pytest.mark.slow
def test_two_labels_of_one_strategy_run_side_by_side(airflow_db, tmp_path):
    data_url = tmp_path / "store"
    conf = {
        "pairs": ["BTCUSDT", "ETHUSDT"],
        "lookback_days": 30,
        "slippage_bps": 3,
        "strategies": [
            {"name": "sma_trend", "params": {"window": "2d"}},
            {"name": "sma_trend", "label": "sma_ls", "params": {"window": "2d"}, "direction": "long_short", "sl": "4%"},
        ],
    }
    dag_run = run_daily_dag(data_url, conf, datetime.fromisoformat("2026-10-01T00:00:00+00:00"))
    assert dag_run.state == "success"
    (folder,) = sorted((data_url / "results" / "crypto_backtest_daily").glob("date=*/run=*"))
    board = pd.read_parquet(folder / "leaderboard.parquet")
    assert sorted(zip(board["symbol"], board["strategy"], strict=True)) == [
        ("BTCUSDT", "sma_ls"), ("BTCUSDT", "sma_trend"), ("ETHUSDT", "sma_ls"), ("ETHUSDT", "sma_trend"),
    ]  # fmt: skip
    for row in board.to_dict("records"):
        result = json.loads((folder / f"strategy={row['strategy']}" / f"{row['symbol']}.json").read_text())
        assert result["strategy"] == "sma_trend"
        assert row["direction"] == result["execution"]["direction"]
        assert row["short_trades"] == result["short_trades"] and row["exits_stop"] == result["exits"]["stop"]
        assert row["slippage_bps"] == 3.0 and row["final_position"] == result["final_position"]
        # each row is what the job prints for that pair and its options alone
        options = ["--direction", "long_short", "--sl", "4%"] if row["strategy"] == "sma_ls" else []
        alone = backtest_process(
            "run", "--symbol", row["symbol"], "--data-url", str(data_url), "--start", result["start"], "--end",
            result["end"], "--window", "2d", "--fee-bps", "10", "--slippage-bps", "3", *options, check=True,
        )  # fmt: skip
        assert json.loads(alone.stdout) == result
    ls = board[board["strategy"] == "sma_ls"]
    assert (ls["direction"] == "long_short").all() and (ls["sl"] == 0.04).all() and ls["short_trades"].sum() > 0
    report = (folder / "report.html").read_text()
    assert "sma_ls" in report and "exits_stop" in report  # the exit kinds are shown for a run that uses stops
