"""Heatmaps of a grid over two parameters: the metric the best combination was chosen by, per top pair."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from markupsafe import Markup

from backtest_airflow.layout import GRID_PARAM_PREFIX
from backtest_airflow.report.charts.base import figure_svg, mpl
from backtest_airflow.report.formatting import format_value

HEATMAP_PAIRS = 3  # heatmaps for this many top pairs of each strategy with a two-parameter grid
ANNOTATE_CELLS = 64  # heatmaps with at most this many cells show their values in the cells
MAX_TICKS = 16  # per heatmap axis


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
    _, Figure = mpl()
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
