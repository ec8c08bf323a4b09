"""Several strategies compared across pairs: per strategy, the ranking metric's median, mean, wins and spread."""

from __future__ import annotations

import numpy as np
import pandas as pd
from markupsafe import Markup

from backtest_airflow.report.charts.base import STRATEGY_COLOR, bar_axes, figure_svg, mpl


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
    _, Figure = mpl()

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
    percent = metric.removeprefix("oos_") in ("total_return", "buy_hold_return", "cagr", "max_drawdown", "win_rate")
    bar_axes(ax, percent)
    ax.set_title(f"{metric} of each ranked pair, by strategy", loc="left", fontsize=11)
    return figure_svg(fig, "strategies", f"{metric} of each ranked pair by strategy")
