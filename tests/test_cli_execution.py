"""`run`'s execution options through the CLI: bad input (one line, exit 2 or 5, nothing written),
stop levels joining the grid (with hold-out and walk-forward), and each grid row equal to the
single run of its combination."""

from __future__ import annotations

import json

import pytest

from backtest.errors import EXIT_INPUT, EXIT_STRATEGY
from backtest.simulation.execution import parse_execution, parse_fraction, parse_stop_values
from tests.support import run_cli, run_json
from tests.support.strategies import drop

WINDOW = ["--symbol", "BTCUSDT", "--start", "2024-03-01", "--end", "2024-05-01"]


def assert_refused(capsys, store, tmp_path, code: int, *options: str, says: str) -> None:
    results = tmp_path / "results"
    got, out, err = run_cli(capsys, *WINDOW, "--data-url", store, "--results-url", str(results), *options)
    assert got == code, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err
    assert not results.exists()  # nothing written


@pytest.mark.parametrize(
    "options, says",
    [
        (["--direction", "both"], "invalid --direction 'both'"),
        (["--sl", "0"], "invalid --sl '0'"),
        (["--sl", "1"], "invalid --sl '1'"),
        (["--sl", "100%"], "invalid --sl '100%'"),
        (["--sl=-5%"], "invalid --sl '-5%'"),
        (["--sl", "abc"], "invalid --sl 'abc'"),
        (["--sl", "nan"], "invalid --sl 'nan'"),
        (["--sl", "3%,x"], "invalid --sl 'x'"),
        (["--sl", "1%:5%"], "invalid range '1%:5%'"),
        (["--sl", "1%:5%:0"], "invalid --sl step '0'"),
        (["--trail", "1.5"], "invalid --trail '1.5'"),
        (["--tp", "0"], "invalid --tp '0'"),
        (["--tp", "-1"], "invalid --tp '-1'"),
        (["--tp", "101"], "invalid --tp '101'"),
        (["--size", "0"], "invalid --size '0'"),
        (["--size", "1.01"], "invalid --size '1.01'"),
        (["--size", "1_0"], "invalid --size '1_0'"),
        (["--slippage-bps", "-1"], "invalid --slippage-bps '-1'"),
        (["--slippage-bps", "1000"], "invalid --slippage-bps '1000'"),
        (["--slippage-bps", "inf"], "invalid --slippage-bps 'inf'"),
        (["--borrow-bps-per-day", "5bps"], "invalid --borrow-bps-per-day '5bps'"),
        (["--sl", ""], "--sl is empty"),
    ],
)
def test_bad_execution_options_are_one_line_exit_2_and_write_nothing(capsys, store, tmp_path, options, says):
    assert_refused(capsys, store, tmp_path, EXIT_INPUT, *options, says=says)


def test_a_short_side_from_a_long_only_strategy_is_exit_2_naming_it(capsys, store, tmp_path, strategy_folder):
    drop(strategy_folder, "long_only", LONG_ONLY)
    for direction in ("short", "long_short"):
        assert_refused(
            capsys, store, tmp_path, EXIT_INPUT, "--strategy", "long_only", "--direction", direction,
            says=f"--direction {direction} needs a short side: strategy long_only",
        )  # fmt: skip
    code, (result,) = run_json(capsys, *WINDOW, "--data-url", store, "--strategy", "long_only", "--direction", "long")
    assert code == 0 and result["short_trades"] == 0


LONG_ONLY = """
import numpy as np
from backtest.strategy import Param, strategy

@strategy(name="long_only", params=[Param("window", "1d", low=2, high=1000, bars=True)], warmup=lambda p: p["window"])
def long_only(candles, window):
    return candles.close > np.roll(candles.close, window)
"""

BAD_TARGETS = """
import numpy as np
from backtest.strategy import Strategy, register

@register
class BadTargets(Strategy):
    name = "bad_targets"
    sides = ("long", "short")

    def warmup_bars(self, params):
        return 0

    def signals(self, candles, combos):
        return np.{expr}
"""


@pytest.mark.parametrize(
    "expr",
    [
        "full((len(combos), len(candles)), 0.5)",  # floats
        "full((len(combos), len(candles)), np.nan)",  # NaN
        "full((len(combos), len(candles)), 1, dtype=np.int64)",  # another integer type
        "full((len(combos), len(candles)), 2, dtype=np.int8)",  # int8 outside {-1, 0, 1}
        "full((len(combos), len(candles)), -1, dtype=np.int8)[:, 1:]",  # a wrong shape
    ],
)
def test_a_strategy_returning_bad_targets_is_exit_5_in_one_line(capsys, store, tmp_path, strategy_folder, expr):
    drop(strategy_folder, "bad_targets", BAD_TARGETS.replace("{expr}", expr))
    assert_refused(
        capsys, store, tmp_path, EXIT_STRATEGY, "--strategy", "bad_targets", "--direction", "long_short",
        says="strategy bad_targets",
    )  # fmt: skip


def test_fractions_and_percents_are_the_same_values():
    assert parse_fraction("5%", "--sl") == 0.05 == parse_fraction("0.05", "--sl")
    assert parse_fraction("7%", "--sl") == 0.07  # not 7 / 100 = 0.07000000000000001
    assert parse_stop_values("1%:5%:2%", "sl") == (0.01, 0.03, 0.05)
    assert parse_stop_values("0.03:0.09:0.03", "sl") == (0.03, 0.06, 0.09)
    assert parse_stop_values("3%,0.03,6%", "sl") == (0.03, 0.06)  # one value once
    grid = parse_execution("long_short", sl="3%,6%", tp="10%", trail=None)
    assert [(e.sl, e.tp, e.trail) for e in grid.executions] == [(0.03, 0.1, None), (0.06, 0.1, None)]


def test_stop_levels_join_the_grid_and_each_row_is_its_single_run(capsys, store):
    base = [*WINDOW, "--data-url", store, "--strategy", "sma_cross", "--direction", "long_short"]
    grid = ["--param", "fast=6h,12h", "--param", "slow=2d", "--sl", "2%,5%", "--tp", "8%"]
    code, (result,) = run_json(capsys, *base, *grid, "--select-by", "sharpe")
    assert code == 0
    assert result["grid"]["combinations"] == 4 and result["grid"]["execution"] == {"sl": "2%,5%", "tp": "8%"}
    rows = result["sweep"]
    assert [(r["params"]["fast"], r["execution"]["sl"]) for r in rows] == [
        ("6h", 0.02), ("6h", 0.05), ("12h", 0.02), ("12h", 0.05),
    ]  # fmt: skip
    for row in rows:
        assert row["execution"]["tp"] == 0.08 and row["execution"]["direction"] == "long_short"
        sl = f"{row['execution']['sl']:g}"
        code, (alone,) = run_json(capsys, *base, "--param", f"fast={row['params']['fast']}", "--param", "slow=2d",
                                  "--sl", sl, "--tp", "8%")  # fmt: skip
        assert code == 0
        assert {k: v for k, v in row.items() if k not in ("params", "execution")} == {
            k: alone[k] for k in row if k not in ("params", "execution")
        }
        assert alone["execution"] == row["execution"]
    assert sum(r["exits"]["stop"] for r in rows) > 0  # the stops fire on these candles
    best = max(rows, key=lambda r: r["sharpe"])
    assert result["execution"] == best["execution"] and result["sharpe"] == best["sharpe"]


def test_hold_out_and_walk_forward_choose_among_stop_levels(capsys, store):
    base = [*WINDOW, "--data-url", store, "--strategy", "sma_trend", "--param", "window=1d,2d", "--sl", "2%,50%"]
    code, (held,) = run_json(capsys, *base, "--holdout-days", "10")
    assert code == 0 and len(held["sweep"]) == 4 and all("oos" in row for row in held["sweep"])
    chosen = [r for r in held["sweep"] if r["execution"] == held["execution"] and r["params"] == held["best"]]
    assert len(chosen) == 1 and chosen[0]["oos"] == {k: v for k, v in held["oos"].items() if k != "trade_stats"}
    code, (walk,) = run_json(capsys, *base, "--walk-forward", "20d:10d")
    assert code == 0
    for fold in walk["walk_forward"]["folds"]:
        assert fold["execution"]["sl"] in (0.02, 0.5)
    assert walk["oos"] == walk["walk_forward"]["stitched"]


def test_results_and_equity_file_carry_the_execution(capsys, store, tmp_path):
    import pyarrow.parquet as pq

    results = tmp_path / "results"
    code, (result,) = run_json(
        capsys, *WINDOW, "--data-url", store, "--strategy", "sma_trend", "--direction", "short", "--trail", "4%",
        "--size", "50%", "--slippage-bps", "5", "--borrow-bps-per-day", "10", "--results-url", str(results),
    )  # fmt: skip
    assert code == 0
    assert result["execution"] == {
        "direction": "short", "sl": None, "tp": None, "trail": 0.04, "size": 0.5, "slippage_bps": 5.0,
        "borrow_bps_per_day": 10.0,
    }  # fmt: skip
    assert result["long_trades"] == 0 and result["short_trades"] == result["trades"] > 0
    assert sum(result["exits"].values()) <= result["trades"]
    assert json.loads((results / "BTCUSDT.json").read_text()) == result
    table = pq.read_table(results / "BTCUSDT.equity.parquet")
    assert str(table.schema.field("position").type) == "int8"
    positions = set(table.column("position").to_pylist())
    assert positions <= {-1, 0} and -1 in positions
    assert result["final_position"] == {-1: "short", 0: "flat"}[table.column("position")[-1].as_py()]
    assert result["exposure"] == pytest.approx(table.column("position").to_pylist().count(-1) / table.num_rows)
