"""How the leaderboard tables show each value: its text, header, sorting key and CSS class.

Shared by the run report and the Backtests page; no HTML here (the templates escape and lay
out), only plain values: `leaderboard_view` is what the `leaderboard` macro of
`templates/_tables.html.j2` draws. Which columns and rows show is `columns`'.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from backtest_airflow.layout import WF_IS_PREFIX

# The returns: percentages with their sign, and the first figures of the report's table.
RETURN_COLUMNS = ("total_return", "buy_hold_return", "excess_return", "cagr")
# Trade returns (`trade_stats`, backtest.simulation.trade_stats): percentages with their sign too.
TRADE_RETURNS = ("best_trade", "worst_trade", "avg_trade", "avg_win", "avg_loss", "expectancy")
PERCENT_COLUMNS = frozenset(
    (
        *RETURN_COLUMNS,
        *TRADE_RETURNS,
        "position_return",
        "volatility",
        "max_drawdown",
        "win_rate",
        "exposure",
        "wf_param_change_share",
    )
)
SIGNED_COLUMNS = frozenset((*RETURN_COLUMNS, *TRADE_RETURNS, "position_return"))
RATIO_COLUMNS = frozenset(
    ("sharpe", "sortino", "calmar", "wf_efficiency", "wf_efficiency_median", "profit_factor", "sqn")
)
# Probabilities (the probabilistic and deflated Sharpe ratios), 0 to 1.
PROBABILITY_COLUMNS = frozenset(("psr", "dsr"))
DECIMAL_COLUMNS = frozenset(("avg_trade_bars",))  # one decimal
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
        "max_consecutive_losses",
        "max_trade_bars",
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
    "wf_efficiency_median": "WF efficiency (median)",
    "psr": "PSR",
    "dsr": "DSR",
    "profit_factor": "profit factor",
    "sqn": "SQN",
    "max_consecutive_losses": "loss streak",
    "best_trade": "best trade",
    "worst_trade": "worst trade",
    "avg_trade": "mean trade",
    "avg_win": "mean win",
    "avg_loss": "mean loss",
    "avg_trade_bars": "mean bars held",
    "max_trade_bars": "most bars held",
    "next_params": "next params",
    "position_now": "position now",
    "position_since": "since",
    "position_entry_price": "entry price",
    "position_return": "return so far",
    "wf_param_changes": "param changes",
    "wf_param_change_share": "change share",
    "wf_efficiency_folds": "efficiency folds",
    "wf_folds": "folds",
    "wf_last_params": "last fold's params",
}
TEXT_COLUMNS = frozenset(
    (
        "symbol",
        "strategy",
        "status",
        "selection",
        "params",
        "next_params",
        "wf_last_params",
        "position_now",
        "position_since",
    )
)
# How a `selection` shows in a table (`combinations`: how many the best was chosen among).
SELECTION_TEXT = {
    "none": "one combination",
    "in_sample_best": "in-sample best of {combinations}: hindsight",
    "holdout": "chosen in sample, hold-out",
    "walk_forward": "walk-forward",
}
# The columns a leaderboard table keeps in view while it scrolls sideways (with the ranking column).
PINNED_COLUMNS = ("rank", "symbol", "strategy")


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
    if column in RATIO_COLUMNS or column in PROBABILITY_COLUMNS:
        return f"{float(value):.2f}"
    if column in DECIMAL_COLUMNS:
        return f"{float(value):,.1f}"
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


def leaderboard_view(
    table: pd.DataFrame,
    columns: list[str],
    table_id: str = "",
    pinned: tuple[str, ...] = PINNED_COLUMNS,
    in_sample: frozenset[str] = frozenset(),
) -> dict:
    """The leaderboard's head and rows as the `leaderboard` macro draws them (plain text, CSS classes).

    The headers of the `in_sample` columns say `IS ...`: a hold-out's figures of the part of the
    window where the combination was chosen, beside its `OOS ...` ones.

    The `pinned` columns (class `pin`, the last one also `pin-last`) stay in view while the table
    scrolls sideways (`position: sticky`; the page's script sets their offsets). A `selection`
    shows as SELECTION_TEXT says, `in_sample_best` with the class `hindsight`."""
    numeric = {column: _numeric(table, column) for column in columns}  # once per column, not per cell
    pins = [c for c in columns if c in pinned]
    pin_css = {c: "pin pin-last" if c == pins[-1] else "pin" for c in pins}
    heads = [
        {
            "label": f"IS {label(c)}" if c in in_sample else label(c),
            "css": _classes("text" if c in TEXT_COLUMNS or not numeric[c] else "", pin_css.get(c)),
        }
        for c in columns
    ]
    rows = []
    for record in table.to_dict("records"):
        status = str(record.get("status") or "")
        cells = []
        for column in columns:
            value = record.get(column)
            classes = []
            text = format_value(column, value)
            if column == "status":
                classes += ["text", "status-ok" if status == "ok" else "status-bad"]
            elif column == "selection":
                classes += ["text", "hindsight" if value == "in_sample_best" else ""]
                text = _selection_text(value, record.get("combinations"))
            elif column in TEXT_COLUMNS or not numeric[column]:
                classes.append("text")
            elif metric_of(column) in SIGNED_COLUMNS and not missing(value):
                classes.append("pos" if float(value) > 0 else "neg" if float(value) < 0 else "")
            css = _classes(*classes, pin_css.get(column))
            cells.append({"css": css, "sort": sort_value(value), "text": text})
        rows.append(
            {
                "ok": status == "ok",
                "symbol": record.get("symbol"),
                "strategy": _text(record.get("strategy")),
                "cells": cells,
            }
        )
    return {"id": table_id, "heads": heads, "rows": rows}


def _classes(*names: str | None) -> str:
    return " ".join(name for name in names if name)


def _selection_text(value: object, combinations: object) -> str:
    if missing(value):
        return ""
    text = SELECTION_TEXT.get(str(value), str(value))
    return text.format(combinations=format_value("combinations", combinations) or "?")


def _text(value: object) -> str | None:
    return None if missing(value) else str(value)


def _numeric(table: pd.DataFrame, column: str) -> bool:
    base = metric_of(column)
    if any(base in kind for kind in (PERCENT_COLUMNS, RATIO_COLUMNS, INTEGER_COLUMNS, PROBABILITY_COLUMNS)):
        return True
    if column not in table:
        return False
    values = [v for v in table[column] if not missing(v)]
    return bool(values) and all(isinstance(v, int | float | np.integer | np.floating) for v in values)
