"""The report's charts (matplotlib, Agg, rendered to inline SVG) and the curves they draw.

Equity curves come from the run's `{symbol}.equity.parquet`, buy-and-hold (close / first close)
from the candle store. Only the top and bottom `CURVES_EACH_END` ranked pairs get curves, so that
rendering stays cheap for 50 pairs; hourly curves are thinned to `MAX_PLOT_POINTS` per line.
"""

from __future__ import annotations

import io
import logging
import math

import numpy as np
import pandas as pd
import pyarrow as pa
from markupsafe import Markup

from backtest.errors import BacktestError
from backtest.params import HOUR_MS
from backtest.storage import read_bytes, read_parquet_bytes, resolve
from backtest_airflow.formatting import format_value

log = logging.getLogger("backtest_airflow.charts")

CURVES_EACH_END = 3  # equity/drawdown charts for this many top and bottom pairs
MAX_PLOT_POINTS = 800  # per line; hourly curves are thinned to this (drawdowns keep their peaks)
STRATEGY_COLOR = "#1f5fbf"
BUY_HOLD_COLOR = "#9a9a9a"


# -- data for the charts ----------------------------------------------------------------------


def shown_pairs(table: pd.DataFrame, each_end: int = CURVES_EACH_END) -> list[tuple[str, str]]:
    """(symbol, 'top' | 'bottom') for the ranked pairs that get curves, best first, no repeats."""
    ranked = table[(table["status"] == "ok") & table["rank"].notna()].sort_values("rank")
    symbols = ranked["symbol"].tolist()
    top = symbols[:each_end]
    bottom = [s for s in symbols[-each_end:] if s not in top] if each_end else []
    return [(s, "top") for s in top] + [(s, "bottom") for s in bottom]


def load_equity(results_url: str, symbol: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(open times as datetime64[ms], equity) from `{symbol}.equity.parquet`, or None when missing."""
    data = read_bytes(resolve(results_url).join(f"{symbol}.equity.parquet"))
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
    from backtest.store import CandleStore

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
    """1 - E_t / max_{s<=t} E_s (positive fractions), as in backtest.metrics."""
    return 1.0 - curve / np.maximum.accumulate(curve)


def thin_index(n: int, limit: int = MAX_PLOT_POINTS) -> np.ndarray:
    """Indices of at most ~limit evenly spaced points, always keeping the first and the last."""
    if n <= limit:
        return np.arange(n)
    index = np.arange(0, n, math.ceil(n / limit))
    return index if index[-1] == n - 1 else np.append(index, n - 1)


def bucket_max(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Max of each bucket [index[i], index[i+1]) so that thinning keeps every drawdown's depth."""
    return np.maximum.reduceat(values, index) if len(index) < len(values) else values


# -- charts ------------------------------------------------------------------------------------


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return matplotlib, Figure


def figure_svg(fig, salt: str, label: str) -> Markup:
    """A matplotlib figure as an inline <svg> element (no XML prolog, text kept as text).

    Markup: our own output (matplotlib escapes the text it writes); the label is escaped here.
    """
    matplotlib, _ = _mpl()
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    svg = buffer.getvalue()
    body = svg[svg.index("<svg") + len("<svg") :]
    return Markup('<svg role="img" aria-label="{}"').format(label) + Markup(body)


def pair_chart(symbol: str, row: dict, times: np.ndarray, equity: np.ndarray, buy_hold: np.ndarray | None) -> Markup:
    """Equity vs buy-and-hold (top) and their drawdowns (bottom) for one pair, as SVG."""
    _, Figure = _mpl()
    import matplotlib.dates as mdates
    from matplotlib.ticker import PercentFormatter

    fig = Figure(figsize=(8.6, 4.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2.3, 1])
    index = thin_index(len(times))
    x = times[index]
    top.plot(x, equity[index], color=STRATEGY_COLOR, linewidth=1.3, label="strategy")
    dd = drawdown(equity)
    bottom.fill_between(x, -bucket_max(dd, index), 0, color=STRATEGY_COLOR, alpha=0.35, linewidth=0, label="strategy")
    if buy_hold is not None:
        top.plot(x, buy_hold[index], color=BUY_HOLD_COLOR, linewidth=1.1, label="buy & hold")
        bottom.plot(x, -bucket_max(drawdown(buy_hold), index), color=BUY_HOLD_COLOR, linewidth=0.9, label="buy & hold")
    top.axhline(1.0, color="#444", linewidth=0.6, linestyle=":")
    top.set_ylabel("growth of 1")
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
    title = f"#{rank} {symbol}: strategy {format_value('total_return', row.get('total_return'))}"
    title += f", buy & hold {format_value('buy_hold_return', row.get('buy_hold_return'))}"
    title += f", max drawdown {format_value('max_drawdown', row.get('max_drawdown'))}"
    top.set_title(title, loc="left", fontsize=11)
    return figure_svg(fig, f"pair-{symbol}", f"Equity and drawdown of {symbol} against buy and hold")


def returns_chart(ranked: pd.DataFrame) -> Markup:
    """Total return of every ranked pair beside its buy-and-hold return (horizontal bars), as SVG."""
    _, Figure = _mpl()
    from matplotlib.ticker import PercentFormatter

    symbols = ranked["symbol"].tolist()
    n = len(symbols)
    strategy = pd.to_numeric(ranked["total_return"], errors="coerce").fillna(0.0).to_numpy()
    buy_hold = pd.to_numeric(ranked["buy_hold_return"], errors="coerce").fillna(0.0).to_numpy()
    fig = Figure(figsize=(8.6, 1.3 + 0.32 * n), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)
    height = 0.4
    ax.barh(y - height / 2, strategy, height, color=STRATEGY_COLOR, label="strategy (total_return)")
    ax.barh(y + height / 2, buy_hold, height, color=BUY_HOLD_COLOR, label="buy & hold")
    ax.set_yticks(y, symbols, fontsize=9 if n <= 30 else 7)
    ax.invert_yaxis()  # rank 1 at the top
    ax.axvline(0, color="#444", linewidth=0.7)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(True, axis="x", color="#e3e6eb", linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_axisbelow(True)
    ax.margins(y=0.5 / max(n, 1))
    ax.tick_params(axis="x", labeltop=n > 20)  # a tall chart: the scale at both ends
    fig.legend(loc="outside upper right", ncols=2, frameon=False, fontsize=9)
    ax.set_title("Total return by pair, in rank order", loc="left", fontsize=11)
    return figure_svg(fig, "returns", "Total return of every ranked pair beside buy and hold")
