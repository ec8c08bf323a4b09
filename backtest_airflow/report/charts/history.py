"""The history chart: the ranking metric of the top pairs over the last runs (one line each)."""

from __future__ import annotations

import pandas as pd
from markupsafe import Markup

from backtest_airflow.report.charts.base import figure_svg, mpl
from backtest_airflow.report.formatting import PERCENT_COLUMNS, metric_of


def history_chart(frame: pd.DataFrame, metric: str, title: str) -> Markup | None:
    """`frame`: one row per (date, label) with the metric's value in `value`; None with fewer than two dates."""
    if frame["date"].nunique() < 2:
        return None
    _, Figure = mpl()
    fig = Figure(figsize=(8.6, 3.4), layout="constrained")
    ax = fig.subplots()
    dates = sorted(frame["date"].unique())
    for label, rows in frame.groupby("label", sort=False):
        rows = rows.set_index("date").reindex(dates)
        (line,) = ax.plot(range(len(dates)), rows["value"].astype(float), marker="o", markersize=3, linewidth=1.2,
                          label=str(label))  # fmt: skip
        line.set_gid(f"history-{label}")
    step = max(1, len(dates) // 8)
    ax.set_xticks(range(0, len(dates), step), [d[5:] for d in dates[::step]])
    ax.set_ylabel(metric)
    if metric_of(metric) in PERCENT_COLUMNS:  # a return (oos_ too) reads as a percentage, as in the tables
        from matplotlib.ticker import PercentFormatter

        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(True, color="#e3e6eb", linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_title(title, loc="left", fontsize=11)
    return figure_svg(fig, "history", f"{metric} of the top pairs over the last {len(dates)} runs")
