"""The report's charts (matplotlib, Agg, rendered to inline SVG) and the data they draw.

Equity curves come from the (pair, strategy)'s `{symbol}.equity.parquet` in its strategy's
folder, buy-and-hold (close / first close) from the candle store. Only the top and bottom
`CURVES_EACH_END` ranked (pair, strategy) rows get curves, so that rendering stays cheap for 50
pairs; hourly curves are thinned to `MAX_PLOT_POINTS` per line. A grid over two parameters gets
a heatmap of the metric its best combination was chosen by, for the strategy's top
`HEATMAP_PAIRS` pairs (from the run's grid file); several strategies get a comparison of the
ranking metric's spread across pairs. A walk-forward's equity file is its stitched out-of-sample
curve: its chart marks the folds' boundaries, and the run gets a chart of each row's efficiency.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from markupsafe import Markup

from backtest.data.storage import read_bytes, read_parquet_bytes, resolve
from backtest.errors import BacktestError
from backtest.params import HOUR_MS
from backtest_airflow.layout import GRID_PARAM_PREFIX
from backtest_airflow.report.formatting import format_value, missing

log = logging.getLogger("backtest_airflow.report.charts")

CURVES_EACH_END = 3  # equity/drawdown charts for this many top and bottom (pair, strategy) rows
HEATMAP_PAIRS = 3  # heatmaps for this many top pairs of each strategy with a two-parameter grid
ANNOTATE_CELLS = 64  # heatmaps with at most this many cells show their values in the cells
MAX_TICKS = 16  # per heatmap axis
MAX_PLOT_POINTS = 800  # per line; hourly curves are thinned to this (drawdowns keep their peaks)
STRATEGY_COLOR = "#1f5fbf"
BUY_HOLD_COLOR = "#9a9a9a"
FOLD_COLOR = "#c2571a"  # a walk-forward's fold boundaries
NEGATIVE_COLOR = "#c0392b"


# -- data for the charts ----------------------------------------------------------------------


def shown_pairs(table: pd.DataFrame, each_end: int = CURVES_EACH_END) -> list[tuple[str, str | None, str]]:
    """(symbol, strategy, 'top' | 'bottom') for the ranked rows that get curves, best first, no
    repeats (strategy None in a leaderboard without a `strategy` column)."""
    ranked = table[(table["status"] == "ok") & table["rank"].notna()].sort_values("rank")
    strategies = ranked["strategy"] if "strategy" in ranked else [None] * len(ranked)
    keys = list(zip(ranked["symbol"], strategies, strict=True))
    top = keys[:each_end]
    bottom = [k for k in keys[-each_end:] if k not in top] if each_end else []
    return [(*k, "top") for k in top] + [(*k, "bottom") for k in bottom]


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


def pair_chart(
    symbol: str,
    row: dict,
    times: np.ndarray,
    equity: np.ndarray,
    buy_hold: np.ndarray | None,
    prefix: str = "",
    boundaries: list[np.datetime64] | None = None,
) -> Markup:
    """Equity vs buy-and-hold (top) and their drawdowns (bottom) for one pair, as SVG.

    `prefix` "oos_": the curve is a walk-forward's stitched out-of-sample one, titled with the
    row's `oos_*` figures; `boundaries`: where its folds' test windows start (dashed vertical
    lines on both panels; on the top one the SVG group of line k is `fold-boundary-<k>`, k from 1)."""
    _, Figure = _mpl()
    import matplotlib.dates as mdates
    from matplotlib.ticker import PercentFormatter

    fig = Figure(figsize=(8.6, 4.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2.3, 1])
    index = thin_index(len(times))
    x = times[index]
    name = "walk-forward, out of sample" if prefix == "oos_" else "strategy"
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
    what, dd = ("out of sample", "max DD") if prefix == "oos_" else ("strategy", "max drawdown")
    title = f"#{rank} {symbol}: {what} {format_value('total_return', row.get(prefix + 'total_return'))}"
    title += f", buy & hold {format_value('buy_hold_return', row.get(prefix + 'buy_hold_return'))}"
    title += f", {dd} {format_value('max_drawdown', row.get(prefix + 'max_drawdown'))}"
    top.set_title(title, loc="left", fontsize=11)
    return figure_svg(fig, f"pair-{symbol}", f"Equity and drawdown of {symbol} against buy and hold")


def returns_chart(ranked: pd.DataFrame, several: bool = False, prefix: str = "") -> Markup:
    """Total return of every ranked row beside its buy-and-hold return (horizontal bars), as SVG
    (`prefix` "oos_": the out-of-sample figures)."""
    _, Figure = _mpl()
    from matplotlib.ticker import PercentFormatter

    strategies = ranked["strategy"] if "strategy" in ranked else [None] * len(ranked)
    symbols = [row_label(s, k, several) for s, k in zip(ranked["symbol"], strategies, strict=True)]
    n = len(symbols)
    strategy = pd.to_numeric(ranked[prefix + "total_return"], errors="coerce").fillna(0.0).to_numpy()
    buy_hold = pd.to_numeric(ranked[prefix + "buy_hold_return"], errors="coerce").fillna(0.0).to_numpy()
    fig = Figure(figsize=(8.6, 1.3 + 0.32 * n), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)
    height = 0.4
    ax.barh(y - height / 2, strategy, height, color=STRATEGY_COLOR, label=f"strategy ({prefix}total_return)")
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
    what = "Out-of-sample total return" if prefix == "oos_" else "Total return"
    ax.set_title(f"{what} by {'(pair, strategy)' if several else 'pair'}, in rank order", loc="left", fontsize=11)
    return figure_svg(fig, "returns", "Total return of every ranked pair beside buy and hold")


def efficiency_chart(ranked: pd.DataFrame, several: bool = False) -> Markup:
    """Each ranked row's walk-forward efficiency (`wf_efficiency`, horizontal bars in rank order),
    with 0 and 1 marked; a row without one is labelled n/a. As SVG."""
    _, Figure = _mpl()

    strategies = ranked["strategy"] if "strategy" in ranked else [None] * len(ranked)
    labels = [row_label(s, k, several) for s, k in zip(ranked["symbol"], strategies, strict=True)]
    values = pd.to_numeric(ranked["wf_efficiency"], errors="coerce").to_numpy(dtype=float)
    n = len(labels)
    fig = Figure(figsize=(8.6, 1.3 + 0.3 * n), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)
    defined = np.isfinite(values)
    colors = [STRATEGY_COLOR if v >= 0 else NEGATIVE_COLOR for v in np.where(defined, values, 0.0)]
    ax.barh(y[defined], values[defined], 0.6, color=[c for c, d in zip(colors, defined, strict=True) if d])
    for i in y[~defined]:
        ax.text(0, i, " n/a", va="center", fontsize=8, color="#666")
    ax.axvline(0, color="#444", linewidth=0.7)
    ax.axvline(1, color=BUY_HOLD_COLOR, linewidth=0.9, linestyle="--")
    if defined.any() and np.abs(values[defined]).max() > 10:  # a fold with a tiny in-sample cagr: keep 0..1 readable
        ax.set_xscale("symlog", linthresh=1)
    ax.set_yticks(y, labels, fontsize=9 if n <= 30 else 7)
    ax.set_ylim(n - 0.5, -0.5)  # every row, rank 1 at the top (also the n/a ones, which have no bar)
    ax.grid(True, axis="x", color="#e3e6eb", linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_axisbelow(True)
    if ax.get_xscale() == "symlog":
        ax.set_xlabel("efficiency (symmetric log scale, linear from -1 to 1)", fontsize=9)
    what = "(pair, strategy)" if several else "pair"
    ax.set_title(f"Walk-forward efficiency by {what}, in rank order", loc="left", fontsize=11)
    return figure_svg(fig, "efficiency", "Walk-forward efficiency of every ranked pair")


# -- grids and strategies ----------------------------------------------------------------------


@dataclass(frozen=True)
class Heatmap:
    """One pair's grid over two parameters: `values[i, j]` is `metric` at (y_labels[i], x_labels[j]).

    NaN where the grid has no such combination (the strategy rejected it) or the metric is
    undefined; `best` is the cell of the chosen combination.
    """

    symbol: str
    strategy: str
    metric: str
    y: str
    x: str
    y_labels: list[str]
    x_labels: list[str]
    values: np.ndarray
    best: tuple[int, int] | None


def varying_params(rows: pd.DataFrame) -> list[str]:
    """The parameters (names as in the result JSON) whose value differs between grid rows, in column order.

    A bar count (`fast` with `fast_bars`) is one parameter, ordered by its bars."""
    names = [c.removeprefix(GRID_PARAM_PREFIX) for c in rows.columns if c.startswith(GRID_PARAM_PREFIX)]
    found = []
    for name in names:
        if name.endswith("_bars") and name.removesuffix("_bars") in names:
            continue
        if rows[_axis_column(rows, name)].dropna().nunique() > 1:
            found.append(name)
    return found


def _axis_column(rows: pd.DataFrame, name: str) -> str:
    """The column that orders a parameter's values: `param_<name>_bars` for a bar count, else `param_<name>`."""
    bars = f"{GRID_PARAM_PREFIX}{name}_bars"
    return bars if bars in rows else GRID_PARAM_PREFIX + name


def heatmap(rows: pd.DataFrame, metric: str) -> Heatmap | None:
    """The heatmap of one (pair, strategy)'s grid rows, or None unless exactly two parameters vary."""
    axes = varying_params(rows)
    if len(axes) != 2:
        return None
    y, x = axes
    y_values, y_labels = _axis(rows, y)
    x_values, x_labels = _axis(rows, x)
    values = np.full((len(y_values), len(x_values)), np.nan)
    best = None
    ys, xs = rows[_axis_column(rows, y)].tolist(), rows[_axis_column(rows, x)].tolist()
    metrics = pd.to_numeric(rows[metric], errors="coerce").tolist()
    flags = rows["best"].tolist() if "best" in rows else [False] * len(rows)
    y_index, x_index = {v: i for i, v in enumerate(y_values)}, {v: j for j, v in enumerate(x_values)}
    for yv, xv, value, chosen in zip(ys, xs, metrics, flags, strict=True):
        i, j = y_index[yv], x_index[xv]
        values[i, j] = value
        if chosen:
            best = (i, j)
    symbol, strategy = rows["symbol"].iloc[0], rows["strategy"].iloc[0]
    return Heatmap(symbol, strategy, metric, y, x, y_labels, x_labels, values, best)


def _axis(rows: pd.DataFrame, name: str) -> tuple[list, list[str]]:
    """A parameter's distinct values in order, and how each is written (`1d` for 24 bars)."""
    order = rows[_axis_column(rows, name)]
    text = rows[GRID_PARAM_PREFIX + name]
    labels: dict = {}
    for value, label in zip(order, text, strict=True):
        labels.setdefault(value, label)
    values = sorted(labels)
    return values, [format_value("", labels[v]) if not isinstance(labels[v], str) else labels[v] for v in values]


def _ticks(labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """At most about MAX_TICKS tick positions (cell centres) and their labels."""
    step = math.ceil(len(labels) / MAX_TICKS)
    return np.arange(0, len(labels), step) + 0.5, labels[::step]


def heatmaps_chart(maps: list[Heatmap], title: str) -> Markup:
    """Small multiples: one heatmap per pair, side by side, on one colour scale, the chosen cell outlined."""
    _, Figure = _mpl()
    from matplotlib.patches import Rectangle

    first = maps[0]
    defined = np.concatenate([m.values[np.isfinite(m.values)] for m in maps])
    low, high = (float(defined.min()), float(defined.max())) if len(defined) else (0.0, 1.0)
    cells = first.values.size
    fig = Figure(figsize=(8.6, 3.2 + 0.05 * min(len(first.y_labels), 40)), layout="constrained")
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    mesh = None
    for ax, item in zip(axes, maps, strict=True):
        # Few cells: outlined vector cells; many: one embedded image (vector cells would show seams, and weigh more).
        edges = {"edgecolors": "white", "linewidth": 0.3} if cells <= ANNOTATE_CELLS else {"rasterized": True}
        mesh = ax.pcolormesh(np.ma.masked_invalid(item.values), cmap="viridis", vmin=low, vmax=high, **edges)
        ax.set_xticks(*_ticks(item.x_labels), rotation=90, fontsize=8)
        ax.set_yticks(*_ticks(item.y_labels), fontsize=8)
        ax.set_xlabel(item.x, fontsize=9)
        ax.set_ylabel(item.y, fontsize=9)
        ax.set_title(item.symbol, loc="left", fontsize=10)
        if item.best:
            i, j = item.best
            ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor="#e8175d", linewidth=2))
        ax.invert_yaxis()  # the first value at the top, as in the values table
        if cells <= ANNOTATE_CELLS:
            for (i, j), value in np.ndenumerate(item.values):
                if np.isfinite(value):
                    red, green, blue, _ = mesh.cmap(mesh.norm(value))
                    ink = "#111" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.55 else "white"
                    text = format_value(item.metric, value)
                    ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=6.5, color=ink)
    fig.colorbar(mesh, ax=list(axes), shrink=0.85, label=first.metric)
    fig.suptitle(title, x=0.01, ha="left", fontsize=11)
    label = f"Heatmaps of {first.metric} over {first.y} and {first.x} of {first.strategy}"
    return figure_svg(fig, f"heatmap-{first.strategy}", label)


def strategy_comparison(best: pd.DataFrame, metric: str, lower_is_better: bool, order: list[str]) -> list[dict]:
    """Per strategy (`order`, then any other in leaderboard order): its (pair, strategy) rows, how many are ranked, the
    median and mean of `metric` over the ranked ones with a value, and on how many pairs it is
    the best strategy by `metric` (ties: the better-ranked row), of the pairs with a value at all."""
    ok = best[(best["status"] == "ok") & best["rank"].notna()]
    values = ok[ok[metric].notna()].astype({metric: float}) if metric in ok else ok.iloc[0:0]
    ordered = values.sort_values([metric, "rank"], ascending=[lower_is_better, True], kind="stable")
    winners = ordered.drop_duplicates("symbol")["strategy"].value_counts()
    contested = values["symbol"].nunique()
    rows = []
    for strategy in dict.fromkeys([*order, *best["strategy"]]):
        mine = values.loc[values["strategy"] == strategy, metric]
        wins = int(winners.get(strategy, 0))
        rows.append(
            {
                "strategy": strategy,
                "rows": int((best["strategy"] == strategy).sum()),
                "ranked": int((ok["strategy"] == strategy).sum()),
                "median": float(mine.median()) if len(mine) else None,
                "mean": float(mine.mean()) if len(mine) else None,
                "best_pairs": wins,
                "best_share": wins / contested if contested else None,
                "values": mine.to_numpy(dtype=float),
            }
        )
    return rows


def strategies_chart(comparison: list[dict], metric: str) -> Markup:
    """`metric` of every ranked (pair, strategy) row, one box and strip per strategy, as SVG."""
    _, Figure = _mpl()

    n = len(comparison)
    fig = Figure(figsize=(8.6, 1.2 + 0.55 * n), layout="constrained")
    ax = fig.subplots()
    data = [item["values"] for item in comparison]
    shown = [i for i, values in enumerate(data) if len(values)]
    if shown:
        ax.boxplot(
            [data[i] for i in shown],
            positions=shown,
            orientation="horizontal",
            widths=0.55,
            showfliers=False,
            medianprops={"color": STRATEGY_COLOR, "linewidth": 1.6},
        )
    for i, values in enumerate(data):
        jitter = (np.arange(len(values)) % 7 - 3) * 0.045  # deterministic spread, no random state
        ax.scatter(values, i + jitter, s=9, color="#444", alpha=0.55, linewidths=0, zorder=3)
    ax.set_yticks(range(n), [item["strategy"] for item in comparison], fontsize=9)
    ax.set_ylim(n - 0.5, -0.5)  # the first strategy at the top
    if metric.removeprefix("oos_") in ("total_return", "buy_hold_return", "cagr", "max_drawdown", "win_rate"):
        from matplotlib.ticker import PercentFormatter

        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(True, axis="x", color="#e3e6eb", linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_axisbelow(True)
    ax.set_title(f"{metric} of each ranked pair, by strategy", loc="left", fontsize=11)
    return figure_svg(fig, "strategies", f"{metric} of each ranked pair by strategy")


def row_label(symbol: str, strategy: object, several: bool) -> str:
    """How a (pair, strategy) row is named on a chart: the symbol, with the strategy when a run has several."""
    return f"{symbol} {strategy}" if several and not missing(strategy) else symbol
