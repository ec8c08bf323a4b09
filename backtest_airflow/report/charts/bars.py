"""Bar charts of every ranked row, in rank order: total return beside buy-and-hold, and walk-forward efficiency."""

from __future__ import annotations

import numpy as np
import pandas as pd
from markupsafe import Markup

from backtest_airflow.report.charts.base import (
    BUY_HOLD_COLOR,
    NEGATIVE_COLOR,
    STRATEGY_COLOR,
    bar_axes,
    figure_svg,
    mpl,
    row_label,
)


def returns_chart(ranked: pd.DataFrame, several: bool = False, prefix: str = "") -> Markup:
    """Total return of every ranked row beside its buy-and-hold return (horizontal bars), as SVG
    (`prefix` "oos_": the out-of-sample figures)."""
    _, Figure = mpl()

    symbols = _labels(ranked, several)
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
    bar_axes(ax, percent=True)
    ax.margins(y=0.5 / max(n, 1))
    ax.tick_params(axis="x", labeltop=n > 20)  # a tall chart: the scale at both ends
    fig.legend(loc="outside upper right", ncols=2, frameon=False, fontsize=9)
    what = "Out-of-sample total return" if prefix == "oos_" else "Total return"
    ax.set_title(f"{what} by {'(pair, strategy)' if several else 'pair'}, in rank order", loc="left", fontsize=11)
    return figure_svg(fig, "returns", "Total return of every ranked pair beside buy and hold")


def efficiency_chart(ranked: pd.DataFrame, several: bool = False) -> Markup:
    """Each ranked row's walk-forward efficiency (`wf_efficiency`, horizontal bars in rank order),
    with 0 and 1 marked; a row without one is labelled n/a. As SVG."""
    _, Figure = mpl()

    labels = _labels(ranked, several)
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
    bar_axes(ax)
    if ax.get_xscale() == "symlog":
        ax.set_xlabel("efficiency (symmetric log scale, linear from -1 to 1)", fontsize=9)
    what = "(pair, strategy)" if several else "pair"
    ax.set_title(f"Walk-forward efficiency by {what}, in rank order", loc="left", fontsize=11)
    return figure_svg(fig, "efficiency", "Walk-forward efficiency of every ranked pair")


def _labels(ranked: pd.DataFrame, several: bool) -> list[str]:
    """The ranked rows' names on the bars' axis (`row_label`)."""
    strategies = ranked["strategy"] if "strategy" in ranked else [None] * len(ranked)
    return [row_label(s, k, several) for s, k in zip(ranked["symbol"], strategies, strict=True)]
