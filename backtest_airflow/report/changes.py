"""The report's day-over-day sections: "What changed since <previous as-of>" and the history of
the last runs (a chart of the ranking metric and a pairs x dates calendar of positions), built
from the leaderboard's change columns (`history.changes`) and the stored history (`history.read_history`)."""

from __future__ import annotations

from datetime import date as Date
from datetime import timedelta

import pandas as pd

from backtest_airflow.report import history
from backtest_airflow.report.charts.history import history_chart
from backtest_airflow.report.formatting import PERCENT_COLUMNS, format_value, metric_of, missing

MOVERS = 5  # the largest rank moves shown
HISTORY_PAIRS = 8  # the chart's and the calendar's top pairs
POSITION_MARK = {"long": "L", "flat": "·", "short": "S"}


def _name(row: dict) -> str:
    return " ".join(str(v) for v in (row["symbol"], row.get("strategy")) if not missing(v))


def _difference(metric: str, value: float) -> str:
    """A metric's change: percentage points for a percentage, else the plain signed difference."""
    if metric_of(metric) in PERCENT_COLUMNS:
        return f"{value * 100:+.2f} pp"
    return f"{value:+.2f}"


def changes_view(board: pd.DataFrame, previous: history.RunRef | None, missing_rows: list[dict], date: str,
                 metric: str, settings: list[str] | None = None) -> dict:  # fmt: skip
    """What the section shows: the previous run (and which date, when not the day before), the
    settings it ran with that differ from this run's (`history.settings_changes`), the signal
    changes, the largest rank movers with their visible cause, and the pairs that started or
    stopped failing, are new, or are missing."""
    if previous is None:
        return {"previous": None}
    expected = (Date.fromisoformat(date) - timedelta(days=1)).isoformat()
    gap = None if previous.date == expected else f"no successful run on {expected}; compared with {previous.date}"
    movers = []
    moved = board[board["rank_change"].notna() & (board["rank_change"] != 0)] if "rank_change" in board else board[:0]
    order = moved["rank_change"].abs().astype(float).sort_values(ascending=False, kind="stable").index
    for row in moved.loc[order].head(MOVERS).to_dict("records"):
        causes = []
        if not missing(row.get("params_prev")) and row.get("params_prev") != row.get("next_params"):
            causes.append(f"parameters {row['params_prev']} → {row['next_params']}")
        if not missing(row.get("metric_change")):
            causes.append(f"{metric} {format_value(metric, row['metric_prev'])} → {format_value(metric, row[metric])}")
        movers.append({"name": _name(row), "before": int(row["rank_prev"]), "after": int(row["rank"]),
                       "change": int(row["rank_change"]), "cause": "; ".join(causes)})  # fmt: skip
    metric_movers = []
    shifted = (
        board[pd.to_numeric(board.get("metric_change"), errors="coerce").notna()]
        if "metric_change" in board
        else board[:0]
    )
    order = pd.to_numeric(shifted["metric_change"]).abs().sort_values(ascending=False, kind="stable").index
    for row in shifted.loc[order].head(MOVERS).to_dict("records"):
        metric_movers.append({"name": _name(row), "before": format_value(metric, row["metric_prev"]),
                              "after": format_value(metric, row[metric]), "change": _difference(metric, row["metric_change"])})  # fmt: skip
    change = board["change"] if "change" in board else pd.Series([], dtype=object)
    return {
        "previous": {"date": previous.date, "run_id": previous.run_id, "results_url": previous.results_url},
        "gap": gap,
        "settings": settings or [],
        "signals": [history.signal_text(c) for c in history.signal_changes(board)],
        "movers": movers,
        "metric_movers": metric_movers,  # the largest changes of the ranking metric, whether or not the rank moved
        "metric": metric,
        "now_failing": [_name(r) for r in board[change == "now failing"].to_dict("records")],
        "recovered": [_name(r) for r in board[change == "recovered"].to_dict("records")],
        "new": [_name(r) for r in board[change == "new"].to_dict("records")],
        "missing": [_name(r) for r in missing_rows],
    }


def history_view(data_url: str | None, date: str, board: pd.DataFrame, metric: str) -> dict | None:
    """The last runs' `metric` of the top ranked rows (a chart) and their positions (a calendar):
    the earlier dates' latest successful runs, then this run (`board`, not marked yet)."""
    if not data_url:
        return None
    columns = ["symbol", "strategy", "rank", metric, "position_now"]
    earlier = history.read_history(data_url, date, columns, runs=history.HISTORY_RUNS - 1, before=True)
    now = board[[c for c in columns if c in board]].assign(date=date, run="this run")
    frame = pd.concat([f for f in (earlier, now) if len(f)], ignore_index=True)
    ranked = board[board["rank"].notna()].sort_values("rank").head(HISTORY_PAIRS)
    keys = [(r["symbol"], r.get("strategy")) for r in ranked.to_dict("records")]
    if frame["date"].nunique() < 2 or not keys:
        return None  # one run: no history yet
    frame = frame[
        [(s, t) in keys for s, t in zip(frame["symbol"], frame.get("strategy", [None] * len(frame)), strict=True)]
    ]
    dates = sorted(frame["date"].unique())
    several = "strategy" in board and board["strategy"].nunique() > 1
    label = [f"{s} {t}" if several else s for s, t in zip(frame["symbol"], frame["strategy"], strict=True)]
    chart = history_chart(frame.assign(label=label, value=pd.to_numeric(frame[metric], errors="coerce")), metric,
                          f"{metric} of the top {len(keys)} over the last {len(dates)} runs")  # fmt: skip
    cells = {(s, t, d): p for s, t, d, p in zip(frame["symbol"], frame["strategy"], frame["date"], frame["position_now"],
                                                strict=True)}  # fmt: skip
    rows = [
        {"name": f"{s} {t}" if several else s,
         "cells": [{"side": cells.get((s, t, d)) or "", "mark": POSITION_MARK.get(cells.get((s, t, d)), "")} for d in dates]}
        for s, t in keys
    ]  # fmt: skip
    return {"svg": chart, "dates": dates, "rows": rows, "metric": metric}
