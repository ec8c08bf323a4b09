"""What the leaderboard tables show and how: which rows and columns, and each value's text.

Shared by the run report and the Backtests page; no HTML here (the templates escape and lay
out), only plain values: `leaderboard_view` is what the `leaderboard` macro of
`templates/_tables.html.j2` draws.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from backtest.simulation.metrics import METRIC_NAMES
from backtest_airflow.layout import GRID_PARAM_PREFIX, WF_IS_PREFIX

PERCENT_COLUMNS = frozenset(
    (
        "total_return",
        "buy_hold_return",
        "excess_return",
        "cagr",
        "volatility",
        "max_drawdown",
        "win_rate",
        "exposure",
        "wf_param_change_share",
    )
)
SIGNED_COLUMNS = frozenset(("total_return", "buy_hold_return", "excess_return", "cagr"))
RATIO_COLUMNS = frozenset(("sharpe", "sortino", "calmar", "wf_efficiency"))
INTEGER_COLUMNS = frozenset(
    (
        "rank",
        "trades",
        "bars",
        "gaps",
        "window_bars",
        "combinations",
        "skipped",
        "combination",
        "wf_folds",
        "wf_efficiency_folds",
        "wf_param_changes",
    )
)
# Figures of another part of the window, formatted as the metric they are of: oos_sharpe (a
# hold-out's or a walk-forward's stitched test windows), wf_is_sharpe (the folds' mean in sample).
METRIC_PREFIXES = ("oos_", WF_IS_PREFIX)
LABELS = {
    "total_return": "return",
    "buy_hold_return": "buy & hold",
    "excess_return": "excess",
    "max_drawdown": "max DD",
    "win_rate": "win rate",
    "fee_bps": "fee (bps)",
    "oos_total_return": "OOS return",
    "oos_buy_hold_return": "OOS buy & hold",
    "oos_sharpe": "OOS sharpe",
    "oos_max_drawdown": "OOS max DD",
    "wf_efficiency": "WF efficiency",
    "wf_param_changes": "param changes",
    "wf_param_change_share": "change share",
    "wf_efficiency_folds": "efficiency folds",
    "wf_folds": "folds",
    "wf_last_params": "last fold's params",
}
REPORT_COLUMNS = (
    "rank",
    "symbol",
    "status",
    "total_return",
    "buy_hold_return",
    "excess_return",
    "cagr",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "win_rate",
    "trades",
    "exposure",
)
TEXT_COLUMNS = frozenset(("symbol", "strategy", "status", "params", "wf_last_params"))
# The Backtests page's shorter tables.
COMPACT_COLUMNS = ("rank", "symbol", "status", "total_return", "buy_hold_return", "sharpe", "max_drawdown", "trades")
# Hold-out figures shown when the run has them (every oos_* column is in the Parquet/CSV files).
OOS_SHOWN = ("oos_total_return", "oos_buy_hold_return", "oos_sharpe", "oos_max_drawdown")
# A walk-forward's, after them (with the ranking metric's stitched and mean in-sample figures).
WF_SHOWN = ("oos_cagr", WF_IS_PREFIX + "cagr", "wf_efficiency", "wf_param_change_share", "wf_folds", "wf_last_params")
# ... and on the Backtests page's shorter tables.
COMPACT_WF_SHOWN = ("oos_total_return", "oos_buy_hold_return", "wf_efficiency")
# Leaderboard columns that are the same for every row of a run (shown once, under "Data"), or
# bookkeeping; `params` (`window` in older leaderboards) and `fee_bps` become table columns when
# they differ between rows.
RUN_LEVEL_COLUMNS = frozenset(
    (
        "synthetic",
        "data_source",
        "start",
        "end",
        "first_bar",
        "last_bar",
        "params",
        "window",
        "fee_bps",
        "best",
        "split",
    )
)
HIDDEN_COLUMNS = frozenset(
    (
        "window_bars",
        "bars",
        "gaps",
        "volatility",
        "combinations",
        "skipped",
        "select_by",
        "combination",
        *(f"oos_{name}" for name in METRIC_NAMES),
        *(WF_IS_PREFIX + name for name in METRIC_NAMES),
        "wf_efficiency_folds",
        "wf_param_changes",
    )
)


def missing(value: object) -> bool:
    """None or NaN/NaT (lists and dicts are not missing)."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists, dicts
        return False


def truthy(value: object) -> bool:
    return not missing(value) and bool(value)


def format_value(column: str, value: object) -> str:
    """A leaderboard value as the tables show it (percent, ratio, integer or text)."""
    if missing(value):
        return ""
    column = metric_of(column)
    if column in PERCENT_COLUMNS:
        return f"{float(value):+.2%}" if column in SIGNED_COLUMNS else f"{float(value):.2%}"
    if column in RATIO_COLUMNS:
        return f"{float(value):.2f}"
    if column in INTEGER_COLUMNS:
        return f"{int(value):,}"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def label(column: str) -> str:
    """A column's header: LABELS', else `OOS <metric>` / `IS <metric> (folds)` for the prefixed figures."""
    if column in LABELS:
        return LABELS[column]
    if column.startswith("oos_"):
        return f"OOS {label(metric_of(column))}"
    if column.startswith(WF_IS_PREFIX):
        return f"IS {label(metric_of(column))} (folds)"
    return column


def metric_of(column: str) -> str:
    """The metric a column holds figures of: `sharpe` for oos_sharpe and wf_is_sharpe."""
    for prefix in METRIC_PREFIXES:
        if column.startswith(prefix):
            return column.removeprefix(prefix)
    return column


def sort_value(value: object) -> str:
    """A cell's data-value for the sorting script: a number's full value, or the text."""
    if missing(value):
        return ""
    if isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, int | float | np.integer | np.floating):
        return repr(float(value)) if math.isfinite(float(value)) else ""
    return str(value)


def plain(value: object) -> str:
    """A parameter or cost value as text: lists and flat dicts inline, nested ones as JSON."""
    if isinstance(value, dict) and all(isinstance(v, str | int | float | bool) for v in value.values()):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, dict | list | tuple):
        if isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
            return ", ".join(str(v) for v in value)
        return json.dumps(value, indent=1, sort_keys=True, default=str)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def is_synthetic(table: pd.DataFrame, run_info: dict | None = None) -> bool:
    """Whether any result of the run (or the run itself) is from synthetic candles."""
    if run_info and truthy(run_info.get("synthetic")):
        return True
    flags = table.get("synthetic", [])
    sources = table.get("data_source", [])
    return any(truthy(v) for v in flags) or any("synthetic" in str(v) for v in sources if not missing(v))


def best_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (pair, strategy): its best combination's (every row when the table has no `best` column)."""
    if "best" not in table:
        return table
    return table[table["best"].map(truthy)]


def report_columns(
    table: pd.DataFrame, sweep: bool = False, compact: bool = False, metric: str | None = None
) -> list[str]:
    """The columns a leaderboard table shows: REPORT_COLUMNS (COMPACT_COLUMNS when `compact`), with
    `strategy` after `symbol`, and the chosen `params` (`window` in older leaderboards) after
    `status` in a grid or when they differ between rows; unless compact, also `fee_bps` when it
    differs, hold-out figures when present, and any column this module does not know, so that new
    leaderboard columns are not hidden (the grid file's parameter columns are, `params` says it).

    A walk-forward's figures come first, right after those names (what the run ranks on, before
    the whole window's figures chosen with hindsight): COMPACT_WF_SHOWN when compact, else the
    hold-out figures, the ranking column `metric` with the folds' mean in-sample figure of it, and
    WF_SHOWN."""
    columns = [c for c in (COMPACT_COLUMNS if compact else REPORT_COLUMNS) if c in table]
    walk = "wf_folds" in table and table["wf_folds"].notna().any()

    def varies(column: str) -> bool:
        return column in table and len({str(v) for v in table[column] if not missing(v)}) > 1

    if "strategy" in table:
        columns.insert(columns.index("symbol") + 1 if "symbol" in columns else 0, "strategy")
    for chosen in ("params", "window"):
        if chosen in table and (sweep or varies(chosen)):
            columns.insert(columns.index("status") + 1 if "status" in columns else len(columns), chosen)
    oos = [c for c in OOS_SHOWN if c in table and table[c].notna().any()]
    if walk:
        ranking = [metric, WF_IS_PREFIX + metric_of(metric)] if metric and metric.startswith("oos_") else []
        block = COMPACT_WF_SHOWN if compact else [*oos[:2], *ranking, *WF_SHOWN, *oos[2:]]
        names = [c for c in columns if c in ("rank", "symbol", "strategy", "status", "params", "window")]
        at = max((columns.index(c) + 1 for c in names), default=0)
        columns[at:at] = [c for c in dict.fromkeys(block) if c in table and c not in columns]
    if compact:
        return columns
    if varies("fee_bps"):
        columns.append("fee_bps")
    columns += [c for c in oos if c not in columns]
    known = set(REPORT_COLUMNS) | RUN_LEVEL_COLUMNS | HIDDEN_COLUMNS
    columns += [c for c in table.columns if c not in columns and c not in known and not c.startswith(GRID_PARAM_PREFIX)]
    return columns


def leaderboard_view(table: pd.DataFrame, columns: list[str], table_id: str = "") -> dict:
    """The leaderboard's head and rows as the `leaderboard` macro draws them (plain text, CSS classes)."""
    numeric = {column: _numeric(table, column) for column in columns}  # once per column, not per cell
    heads = [{"label": label(c), "css": "text" if c in TEXT_COLUMNS or not numeric[c] else ""} for c in columns]
    rows = []
    for record in table.to_dict("records"):
        status = str(record.get("status") or "")
        cells = []
        for column in columns:
            value = record.get(column)
            classes = []
            if column == "status":
                classes += ["text", "status-ok" if status == "ok" else "status-bad"]
            elif column in TEXT_COLUMNS or not numeric[column]:
                classes.append("text")
            elif metric_of(column) in SIGNED_COLUMNS and not missing(value):
                classes.append("pos" if float(value) > 0 else "neg" if float(value) < 0 else "")
            css = " ".join(c for c in classes if c)
            cells.append({"css": css, "sort": sort_value(value), "text": format_value(column, value)})
        rows.append(
            {
                "ok": status == "ok",
                "symbol": record.get("symbol"),
                "strategy": _text(record.get("strategy")),
                "cells": cells,
            }
        )
    return {"id": table_id, "heads": heads, "rows": rows}


def _text(value: object) -> str | None:
    return None if missing(value) else str(value)


def _numeric(table: pd.DataFrame, column: str) -> bool:
    base = metric_of(column)
    if base in PERCENT_COLUMNS or base in RATIO_COLUMNS or base in INTEGER_COLUMNS:
        return True
    if column not in table:
        return False
    values = [v for v in table[column] if not missing(v)]
    return bool(values) and all(isinstance(v, int | float | np.integer | np.floating) for v in values)
