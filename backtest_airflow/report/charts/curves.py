"""The equity curve against buy-and-hold and both drawdowns, for the top and bottom rows: the data and the chart.

Equity comes from the (pair, strategy)'s `{symbol}.equity.parquet`, buy-and-hold from the candle store.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
from markupsafe import Markup

from backtest.data.storage import read_bytes, read_parquet_bytes, resolve
from backtest.errors import BacktestError
from backtest.params import HOUR_MS
from backtest.result_files import equity_file
from backtest_airflow.report.charts.base import (
    BUY_HOLD_COLOR,
    FOLD_COLOR,
    STRATEGY_COLOR,
    bucket_max,
    figure_svg,
    mpl,
    thin_index,
)
from backtest_airflow.report.formatting import format_value

log = logging.getLogger("backtest_airflow.report.charts")

CURVES_EACH_END = 3  # equity/drawdown charts for this many top and bottom (pair, strategy) rows


def shown_pairs(table: pd.DataFrame, each_end: int = CURVES_EACH_END) -> list[tuple[str, str | None, str]]:
    """(symbol, strategy, 'top' | 'bottom') for the ranked rows that get curves, best first, no
    repeats (strategy None in a leaderboard without a `strategy` column)."""
    ranked = table[(table["status"] == "ok") & table["rank"].notna()].sort_values("rank")
    strategies = ranked["strategy"] if "strategy" in ranked else [None] * len(ranked)
    keys = list(zip(ranked["symbol"], strategies, strict=True))
    top = keys[:each_end]
    bottom = [k for k in keys[-each_end:] if k not in top] if each_end else []
    return [(*k, "top") for k in top] + [(*k, "bottom") for k in bottom]


def load_equity(
    results_url: str, symbol: str, name: Callable[[str], str] = equity_file
) -> tuple[np.ndarray, np.ndarray] | None:
    """(open times as datetime64[ms], equity) from `{symbol}.equity.parquet` (or the file `name`
    gives, e.g. a hold-out's `oos_equity_file`), or None when missing."""
    data = read_bytes(resolve(results_url).join(name(symbol)))
    if not data:
        return None
    table = read_parquet_bytes(data, columns=["open_time", "equity"])
    times = table.column("open_time").cast(pa.timestamp("ms")).to_numpy()
    equity = table.column("equity").to_numpy()
    return (times, equity) if len(times) else None


def load_buy_hold(data_url: str | None, symbol: str, times: np.ndarray) -> np.ndarray | None:
    """Buy-and-hold growth (close / first close) at the equity curve's bars, from the candle store."""
    if not data_url or not len(times):
        return None
    from backtest.data.store import CandleStore

    open_ms = times.astype("datetime64[ms]").astype(np.int64)
    try:
        candles = CandleStore(data_url).read(symbol, int(open_ms[0]), int(open_ms[-1]) + HOUR_MS).candles
    except (BacktestError, OSError) as exc:
        log.warning("no buy-and-hold curve for %s: %s", symbol, exc)
        return None
    index = np.searchsorted(candles.open_time, open_ms)
    if (index >= len(candles)).any() or (candles.open_time[np.minimum(index, len(candles) - 1)] != open_ms).any():
        log.warning("no buy-and-hold curve for %s: stored candles do not match the equity curve's bars", symbol)
        return None
    closes = candles.close[index]
    return closes / closes[0]


def drawdown(curve: np.ndarray) -> np.ndarray:
    """1 - E_t / max_{s<=t} E_s (positive fractions), as in backtest.simulation.metrics."""
    return 1.0 - curve / np.maximum.accumulate(curve)


LOG_STEPS = ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9))


def log_ticks(low: float, high: float, least: int = 4) -> list[float] | None:
    """Tick values of a log axis over [low, high]: the first of LOG_STEPS (times powers of 10) that
    gives at least `least` ticks; None for a range too narrow for any (evenly spaced ticks then)."""
    for steps in LOG_STEPS:
        ticks = [
            step * 10.0**power
            for power in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
            for step in steps
        ]
        inside = [float(f"{t:.6g}") for t in ticks if low <= t <= high]
        if len(inside) >= least:
            return inside
    return None


def log_axis(ax, *curves: np.ndarray | None) -> None:
    """A log scale for the growth of 1 (a ruined curve's zeros are left out), its ticks plain numbers
    in 1-2-5 (or finer) steps, `log_ticks`."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter, NullLocator

    ax.set_yscale("log")
    values = np.concatenate([c[c > 0] for c in curves if c is not None])
    ticks = log_ticks(float(values.min()), float(values.max())) if len(values) else None
    ax.yaxis.set_major_locator(MaxNLocator(6) if ticks is None else FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def pair_chart(
    symbol: str,
    row: dict,
    times: np.ndarray,
    equity: np.ndarray,
    buy_hold: np.ndarray | None,
    prefix: str = "",
    boundaries: list[np.datetime64] | None = None,
    log: bool = False,
    in_sample: bool = False,
) -> Markup:
    """Equity vs buy-and-hold (top) and their drawdowns (bottom) for one pair, as SVG.

    `prefix` "oos_": the curve is a walk-forward's stitched out-of-sample one, titled with the
    row's `oos_*` figures; `boundaries`: where its folds' test windows start (dashed vertical
    lines on both panels; on the top one the SVG group of line k is `fold-boundary-<k>`, k from 1);
    `log`: the growth of 1 on a log scale (a ruined curve's zeros are left out). `prefix` "oos_"
    without `boundaries`: a hold-out's out-of-sample curve; `in_sample`: the curve is the in-sample part
    before a hold-out (so titled)."""
    _, Figure = mpl()
    import matplotlib.dates as mdates
    from matplotlib.ticker import PercentFormatter

    fig = Figure(figsize=(8.6, 4.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2.3, 1])
    index = thin_index(len(times))
    x = times[index]
    holdout = prefix == "oos_" and boundaries is None  # a hold-out's out-of-sample curve
    if prefix == "oos_":
        name, what, dd_label = f"{'hold-out' if holdout else 'walk-forward'}, out of sample", "out of sample", "max DD"
    elif in_sample:
        name, what, dd_label = "strategy, in sample", "in sample", "max drawdown"
    else:
        name, what, dd_label = "strategy", "strategy", "max drawdown"
    (line,) = top.plot(x, equity[index], color=STRATEGY_COLOR, linewidth=1.3, label=name)
    line.set_gid("equity-curve")
    dd = drawdown(equity)
    bottom.fill_between(x, -bucket_max(dd, index), 0, color=STRATEGY_COLOR, alpha=0.35, linewidth=0, label="strategy")
    if buy_hold is not None:
        top.plot(x, buy_hold[index], color=BUY_HOLD_COLOR, linewidth=1.1, label="buy & hold")
        bottom.plot(x, -bucket_max(drawdown(buy_hold), index), color=BUY_HOLD_COLOR, linewidth=0.9, label="buy & hold")
    top.axhline(1.0, color="#444", linewidth=0.6, linestyle=":")
    for k, boundary in enumerate(boundaries or (), start=1):
        line = top.axvline(
            boundary, color=FOLD_COLOR, linewidth=0.8, linestyle="--", label="fold start" if k == 1 else None
        )
        line.set_gid(f"fold-boundary-{k}")
        bottom.axvline(boundary, color=FOLD_COLOR, linewidth=0.8, linestyle="--")
    if log:
        log_axis(top, equity, buy_hold)
    top.set_ylabel("growth of 1 (log scale)" if log else "growth of 1")
    top.legend(loc="best", frameon=True, framealpha=0.85, edgecolor="none", fontsize=9)
    bottom.set_ylabel("drawdown")
    bottom.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    locator = mdates.AutoDateLocator(minticks=4, maxticks=9)
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    for ax in (top, bottom):
        ax.grid(True, color="#e3e6eb", linewidth=0.6)
        ax.spines[["top", "right"]].set_visible(False)
        ax.margins(x=0)
    rank = format_value("rank", row.get("rank"))
    title = f"#{rank} {symbol}: {what} {format_value('total_return', row.get(prefix + 'total_return'))}"
    title += f", buy & hold {format_value('buy_hold_return', row.get(prefix + 'buy_hold_return'))}"
    title += f", {dd_label} {format_value('max_drawdown', row.get(prefix + 'max_drawdown'))}"
    top.set_title(title, loc="left", fontsize=11)
    scale = "-log" if log else ""
    return figure_svg(
        fig,
        f"pair-{symbol}{'-holdout' if holdout else ''}{scale}",
        f"{'Out-of-sample e' if holdout else 'E'}quity and drawdown of {symbol} against buy and hold"
        f"{' (log scale)' if log else ''}",
    )
