"""The equal-weight portfolio across pairs (backtest_airflow/report/portfolio.py): its curves against
plain loops over the stored per-pair files, its metrics against the job's formulas and by hand, the
selection test on in-sample figures only, the file's schema, the `portfolio_top` param, and one run
of the daily DAG with a hold-out."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backtest.data.refresh import refresh_pair
from backtest.errors import InputError
from backtest.params import HOUR_MS, parse_time_ms
from backtest.simulation.metrics import TradeCounts, compute_metrics_block
from backtest_airflow import layout
from backtest_airflow.planning import make_plan
from backtest_airflow.report import page, portfolio
from tests.support.dag import run_daily_dag

END = datetime.fromisoformat("2026-10-01T00:00:00+00:00")
LABEL = "sma_trend"
SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT")


def plan_of(data_url: str, **params):
    base = {
        "pairs": list(SYMBOLS),
        "lookback_days": 30,
        "strategies": [{"name": "sma_trend", "params": {"window": "2d"}}],
    }
    return make_plan({**base, **params}, data_url, layout.DAG_ID, "manual__test", END)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """Synthetic hourly candles of SYMBOLS up to END (no gaps: the equity files make their own)."""
    data_url = str(tmp_path_factory.mktemp("portfolio") / "store")
    for symbol in SYMBOLS:
        refresh_pair(symbol, data_url, until_ms=parse_time_ms(END.isoformat()), history_days=40, source="synthetic")
    return data_url


def write_curve(folder: Path, name: str, hours: list[int], equity: list[float], start_ms: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    times = pa.array([start_ms + h * HOUR_MS for h in hours], pa.timestamp("ms", tz="UTC"))
    table = pa.table(
        {
            "open_time": times,
            "equity": pa.array(equity, pa.float64()),
            "position": pa.array([0] * len(hours), pa.int8()),
        }
    )
    pq.write_table(table, folder / name)


def stored(folder: Path, name: str) -> list[tuple[int, float]]:
    """A curve file as (open time in ms, equity) rows, read with pandas."""
    frame = pd.read_parquet(folder / name)
    return [(int(t.value // 10**6), float(e)) for t, e in zip(frame["open_time"], frame["equity"], strict=True)]


def closes(data_url: str, symbol: str) -> dict[int, float]:
    """Every stored close of a pair by open time (ms), read from the store's Parquet files with pandas."""
    files = sorted(Path(data_url, "candles", "interval=1h", f"symbol={symbol}").glob("month=*/*.parquet"))
    frame = pd.concat([pd.read_parquet(f) for f in files])
    return {int(t.value // 10**6): float(c) for t, c in zip(frame["open_time"], frame["close"], strict=True)}


def mean_by_hand(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """The equal-weight mean on the union of the hours: a plain loop, each curve's last value at or
    before the hour (carried over its gaps), 1.0 before its first bar."""
    hours = sorted({t for curve in curves for t, _ in curve})
    out = []
    for hour in hours:
        total = 0.0
        for curve in curves:
            value = 1.0
            for t, e in curve:
                if t > hour:
                    break
                value = e
            total += value
        out.append((hour, total / len(curves)))
    return out


def buy_hold_by_hand(curve: list[tuple[int, float]], close: dict[int, float]) -> list[tuple[int, float]]:
    first = close[curve[0][0]]
    return [(t, close[t] / first) for t, _ in curve]


def max_drawdown_by_hand(values: list[float]) -> float:
    peak, worst = values[0], 0.0
    for value in values:
        peak = max(peak, value)
        worst = max(worst, 1.0 - value / peak)
    return worst


def portfolio_rows(results_url: str, curve: str, label: str = LABEL) -> list[tuple[int, float]]:
    frame = pd.read_parquet(Path(results_url) / layout.PORTFOLIO_PARQUET)
    part = frame[(frame["label"] == label) & (frame["curve"] == curve)]
    return [(int(t.value // 10**6), float(e)) for t, e in zip(part["open_time"], part["equity"], strict=True)]


def assert_close(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [t for t, _ in got] == [t for t, _ in want]
    np.testing.assert_allclose([e for _, e in got], [e for _, e in want], rtol=1e-12, atol=0)


def leaderboard(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    table["strategy"], table["status"] = LABEL, "ok"
    table["rank"] = pd.array(range(1, len(table) + 1), "Int64")
    return table


# Four pairs with different first bars, gaps and last bars (hours from the window's start).
HOURS = {
    "AAAUSDT": [*range(0, 10), *range(15, 48)],  # a gap of 5 hours
    "BBBUSDT": list(range(6, 48)),  # starts late: its share is cash before
    "CCCUSDT": [*range(0, 20), *range(22, 40)],  # a gap, and it ends early: carried forward to the end
    "DDDUSDT": list(range(3, 48, 2)),  # every other hour
}


def write_pairs(plan, in_sample_seed: int = 1, oos_seed: int = 2) -> Path:
    """Every pair's equity file (and with a hold-out its out-of-sample file) with random curves."""
    folder = Path(layout.strategy_results_url(plan.results_url, LABEL))
    start = parse_time_ms(plan.start)
    rng = np.random.default_rng(in_sample_seed)
    for symbol, hours in HOURS.items():
        equity = np.cumprod(1.0 + rng.normal(0.0, 0.01, len(hours)))
        write_curve(folder, f"{symbol}.equity.parquet", hours, [1.0, *equity[1:]], start)
    rng = np.random.default_rng(oos_seed)
    for i, symbol in enumerate(SYMBOLS):  # a drift by symbol: DDD best out of sample, AAA worst
        hours = list(range(500, 600))
        equity = np.cumprod(1.0 + rng.normal(0.001 * (i - 1.5), 0.002, len(hours)))
        write_curve(folder, f"{symbol}.oos.equity.parquet", hours, [1.0, *equity[1:]], start)
    return folder


def test_the_portfolio_is_the_mean_of_the_stored_curves_and_buy_hold_the_mean_of_close_over_first(store):
    plan = plan_of(store)
    folder = write_pairs(plan)
    url, summaries = portfolio.write(plan, leaderboard([{"symbol": s, "total_return": 0.0} for s in SYMBOLS]), store)
    assert url == f"{plan.results_url}/{layout.PORTFOLIO_PARQUET}"
    curves = [stored(folder, f"{s}.equity.parquet") for s in SYMBOLS]
    want = mean_by_hand(curves)
    assert len(want) == 48 and want[0] == (parse_time_ms(plan.start), (1.0 + 1.0 + 1.0 + 1.0) / 4)
    got = portfolio_rows(plan.results_url, "portfolio")
    assert_close(got, want)
    # the last hour: CCC's value at hour 39 carried forward, the others' own
    last = {s: c[-1][1] for s, c in zip(SYMBOLS, curves, strict=True)}
    assert got[-1][1] == pytest.approx(sum(last.values()) / 4, rel=1e-15)
    holds = [buy_hold_by_hand(c, closes(store, s)) for s, c in zip(SYMBOLS, curves, strict=True)]
    assert_close(portfolio_rows(plan.results_url, "buy_hold"), mean_by_hand(holds))
    assert portfolio_rows(plan.results_url, "selected") == []  # no hold-out, no walk-forward: no selection
    assert summaries[LABEL]["pairs"] == 4 and "selection" not in summaries[LABEL]
    assert set(summaries[LABEL]["metrics"]) == {"portfolio", "buy_hold"}


def test_metrics_are_the_jobs_formulas_on_the_portfolio_curve(store):
    plan = plan_of(store)
    write_pairs(plan)
    _, summaries = portfolio.write(plan, leaderboard([{"symbol": s, "total_return": 0.0} for s in SYMBOLS]), store)
    equity = np.array([e for _, e in portfolio_rows(plan.results_url, "portfolio")])
    zero = np.zeros(1, np.int64)
    counts = TradeCounts(zero, zero, zero, zero, zero, np.zeros((1, 4), np.int64))
    names = ("total_return", "cagr", "volatility", "sharpe", "sortino", "psr", "max_drawdown", "calmar")
    (want,) = compute_metrics_block(equity[None, :], np.zeros((1, len(equity)), np.int8), equity, 0, counts, names)
    metrics = summaries[LABEL]["metrics"]["portfolio"]
    assert metrics == want and set(metrics) == set(names)
    assert metrics["total_return"] == pytest.approx(equity[-1] - 1.0, rel=1e-12)
    assert metrics["max_drawdown"] == pytest.approx(max_drawdown_by_hand(list(equity)), rel=1e-12)
    assert metrics["cagr"] == pytest.approx(equity[-1] ** (8760 / 48) - 1.0, rel=1e-12)
    assert metrics["max_drawdown"] > 0 and metrics["psr"] is not None
    summary = json.loads((Path(plan.results_url) / layout.SUMMARY_JSON).read_text())
    assert summary["portfolio"][LABEL]["metrics"]["portfolio"] == pytest.approx(want)


def test_the_selection_picks_the_top_pairs_on_in_sample_figures_not_out_of_sample_ones(store):
    plan = plan_of(store, holdout_days=10, portfolio_top=2, rank_on="out_of_sample")
    folder = write_pairs(plan)
    oos = {s: stored(folder, f"{s}.oos.equity.parquet")[-1][1] - 1.0 for s in SYMBOLS}
    assert sorted(SYMBOLS, key=lambda s: -oos[s])[:2] == ["DDDUSDT", "CCCUSDT"]  # the hindsight choice
    in_sample = {"AAAUSDT": 0.30, "BBBUSDT": 0.10, "CCCUSDT": -0.05, "DDDUSDT": 0.10}  # a tie: BBB before DDD
    rows = [
        {"symbol": s, "total_return": in_sample[s], "oos_total_return": oos[s]}
        for s in sorted(oos, key=lambda s: -oos[s])
    ]
    _, summaries = portfolio.write(plan, leaderboard(rows), store)  # ranked on oos: DDD, CCC, BBB, AAA
    selection = summaries[LABEL]["selection"]
    assert selection["symbols"] == ["AAAUSDT", "BBBUSDT"] and selection["top"] == 2
    assert selection["in_sample"] == {"AAAUSDT": 0.30, "BBBUSDT": 0.10}
    chosen = [stored(folder, f"{s}.oos.equity.parquet") for s in ("AAAUSDT", "BBBUSDT")]
    assert_close(portfolio_rows(plan.results_url, "selected"), mean_by_hand(chosen))
    holds = [buy_hold_by_hand(c, closes(store, s)) for s, c in zip(("AAAUSDT", "BBBUSDT"), chosen, strict=True)]
    assert_close(portfolio_rows(plan.results_url, "selected_buy_hold"), mean_by_hand(holds))
    got = summaries[LABEL]["metrics"]["selected"]["total_return"]
    assert got == pytest.approx((oos["AAAUSDT"] + oos["BBBUSDT"]) / 2, rel=1e-12)
    assert got < (oos["DDDUSDT"] + oos["CCCUSDT"]) / 2  # the honest choice did worse than hindsight's
    # lower is better for max_drawdown; an undefined figure comes last
    plan = plan_of(store, holdout_days=10, portfolio_top=3, rank_by="max_drawdown")
    write_pairs(plan)
    drawdowns = [{"symbol": s, "max_drawdown": d} for s, d in zip(SYMBOLS, (0.2, None, 0.05, 0.1), strict=True)]
    _, summaries = portfolio.write(plan, leaderboard(drawdowns), store)
    assert summaries[LABEL]["selection"]["symbols"] == ["CCCUSDT", "DDDUSDT", "AAAUSDT"]


def test_a_walk_forward_selects_on_the_first_folds_in_sample_figure(store):
    plan = plan_of(store, walk_forward="10d:5d", portfolio_top=1, rank_by="sharpe")
    folder = write_pairs(plan)
    first_fold = {"AAAUSDT": 0.5, "BBBUSDT": 2.0, "CCCUSDT": 1.0, "DDDUSDT": None}
    for symbol, sharpe in first_fold.items():  # later folds and the stitched figures say otherwise
        folds = [{"in_sample": {"sharpe": sharpe}}, {"in_sample": {"sharpe": 9.0 if symbol == "AAAUSDT" else 0.0}}]
        (folder / f"{symbol}.json").write_text(json.dumps({"symbol": symbol, "walk_forward": {"folds": folds}}))
    rows = [
        {"symbol": s, "sharpe": 5.0 if s == "CCCUSDT" else 0.0, "oos_sharpe": 5.0 if s == "DDDUSDT" else 0.0}
        for s in SYMBOLS
    ]
    _, summaries = portfolio.write(plan, leaderboard(rows), store)
    selection = summaries[LABEL]["selection"]
    assert selection["symbols"] == ["BBBUSDT"] and selection["on"] == "walk_forward.folds[0].in_sample"
    # the stitched out-of-sample curve is the equity file
    assert_close(portfolio_rows(plan.results_url, "selected"), stored(folder, "BBBUSDT.equity.parquet"))
    assert summaries[LABEL]["window"] == "stitched out of sample"


def test_the_file_schema_and_an_empty_run(store):
    plan = plan_of(store, holdout_days=10)
    write_pairs(plan)
    portfolio.write(plan, leaderboard([{"symbol": s, "total_return": 0.1} for s in SYMBOLS]), store)
    path = Path(plan.results_url) / layout.PORTFOLIO_PARQUET
    assert pq.read_schema(path).remove_metadata() == pa.schema(
        [
            ("label", pa.string()),
            ("curve", pa.string()),
            ("open_time", pa.timestamp("ms", tz="UTC")),
            ("equity", pa.float64()),
        ]
    )
    frame = pd.read_parquet(path)
    assert frame.groupby("curve").size().to_dict() == {
        "buy_hold": 48,
        "portfolio": 48,
        "selected": 100,
        "selected_buy_hold": 100,
    }
    (item,) = portfolio.section(plan.results_url)  # the report's: curves in order, metrics from the stored curves
    assert item["label"] == LABEL and [row["curve"] for row in item["rows"]] == list(portfolio.CURVES)
    selected = frame[frame["curve"] == "selected"]["equity"].to_numpy()
    assert item["rows"][2]["cells"][0] == (repr(float(selected[-1] - 1.0)), f"{selected[-1] - 1.0:+.2%}")
    assert item["selection"]["symbols"] == list(SYMBOLS) and 'id="portfolio-selected' in item["svg"]
    failed = leaderboard([{"symbol": s, "total_return": 0.1} for s in SYMBOLS]).assign(status="failed: x", rank=pd.NA)
    _, summaries = portfolio.write(plan, failed, store)  # nothing ranked: an empty file, not a stale one
    assert summaries == {} and pq.read_table(path).num_rows == 0 and portfolio.section(plan.results_url) is None


@pytest.mark.parametrize("value", [0, 1001, -3, 2.5, "5", True, None])
def test_a_bad_portfolio_top_is_a_one_line_planning_error(value):
    with pytest.raises(InputError) as caught:
        plan_of("/store", portfolio_top=value)
    message = str(caught.value)
    assert message == f"invalid portfolio_top {value!r}: must be a whole number from 1 to 1000"
    assert plan_of("/store").portfolio_top == 5 and plan_of("/store", portfolio_top=1000).portfolio_top == 1000


@pytest.mark.slow
def test_a_daily_run_with_a_hold_out_writes_the_portfolio_of_its_stored_curves(airflow_db, tmp_path):
    data_url = tmp_path / "store"
    pairs = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    conf = {
        "pairs": pairs,
        "lookback_days": 30,
        "holdout_days": 10,
        "portfolio_top": 2,
        "strategies": [{"name": "sma_cross", "params": {"fast": "1d,2d", "slow": "5d"}}],
    }
    dag_run = run_daily_dag(data_url, conf, END)
    assert dag_run.state == "success"
    (run,) = sorted((data_url / "results" / layout.DAG_ID).glob("date=*/run=*"))
    folder = run / "strategy=sma_cross"
    board = pd.read_parquet(run / layout.LEADERBOARD_PARQUET)
    curves = [stored(folder, f"{s}.equity.parquet") for s in pairs]
    assert_close(portfolio_rows(str(run), "portfolio", "sma_cross"), mean_by_hand(curves))
    top = board.sort_values(["total_return", "symbol"], ascending=[False, True])["symbol"].head(2).tolist()
    chosen = [stored(folder, f"{s}.oos.equity.parquet") for s in top]
    assert_close(portfolio_rows(str(run), "selected", "sma_cross"), mean_by_hand(chosen))
    holds = [buy_hold_by_hand(c, closes(str(data_url), s)) for s, c in zip(top, chosen, strict=True)]
    assert_close(portfolio_rows(str(run), "selected_buy_hold", "sma_cross"), mean_by_hand(holds))
    summary = json.loads((run / layout.SUMMARY_JSON).read_text())["portfolio"]["sma_cross"]
    assert summary["selection"]["symbols"] == top and summary["pairs"] == 3
    oos = dict(zip(board["symbol"], board["oos_total_return"], strict=True))
    assert summary["metrics"]["selected"]["total_return"] == pytest.approx(sum(oos[s] for s in top) / 2, rel=1e-9)
    total = dict(zip(board["symbol"], board["total_return"], strict=True))
    assert summary["metrics"]["portfolio"]["total_return"] == pytest.approx(sum(total.values()) / 3, rel=1e-9)
    report = (run / page.REPORT_FILE).read_text()
    assert 'id="portfolio"' in report and 'data-curve="selected"' in report and "portfolio-selected" in report
