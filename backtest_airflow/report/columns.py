"""Which rows and columns the leaderboard tables show, and what a run's leaderboard holds (a grid, a walk-forward).

Shared by the run report and the Backtests page, as `formatting` is; how each value is written is `formatting`'s.
"""

from __future__ import annotations

import pandas as pd

from backtest.simulation.metrics import FLAT_METRIC_NAMES
from backtest_airflow.layout import GRID_PARAM_PREFIX, WF_IS_PREFIX
from backtest_airflow.report.formatting import RETURN_COLUMNS, metric_of, missing, truthy

REPORT_COLUMNS = (
    "rank",
    "symbol",
    "status",
    *RETURN_COLUMNS,
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "win_rate",
    "trades",
    "exposure",
)
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
# How a row traded (docs/execution.md): shown when a run uses shorts, stops, sizing, slippage or borrow
EXECUTION_SHOWN = (
    "direction", "sl", "tp", "trail", "long_trades", "short_trades",
    "exits_signal", "exits_stop", "exits_take_profit", "exits_ruin", "final_position",
    "size", "slippage_bps", "borrow_bps_per_day",
)  # fmt: skip
HIDDEN_COLUMNS = frozenset(
    (
        *EXECUTION_SHOWN,
        "window_bars",
        "bars",
        "gaps",
        "volatility",
        "combinations",
        "skipped",
        "select_by",
        "combination",
        *(f"oos_{name}" for name in FLAT_METRIC_NAMES),
        *(WF_IS_PREFIX + name for name in FLAT_METRIC_NAMES),
        "wf_efficiency_folds",
        "wf_param_changes",
    )
)


def is_synthetic(table: pd.DataFrame, run_info: dict | None = None) -> bool:
    """Whether any result of the run (or the run itself) is from synthetic candles."""
    if run_info and truthy(run_info.get("synthetic")):
        return True
    flags = table.get("synthetic", [])
    sources = table.get("data_source", [])
    return any(truthy(v) for v in flags) or any("synthetic" in str(v) for v in sources if not missing(v))


def has_grid(table: pd.DataFrame) -> bool:
    """Whether any (pair, strategy) of a leaderboard chose among several combinations."""
    return "combinations" in table and bool((pd.to_numeric(table["combinations"], errors="coerce") > 1).any())


def uses_execution(table: pd.DataFrame) -> bool:
    """Whether any row traded otherwise than long/flat at size 1 without stops, slippage or borrow."""

    def given(column: str, default) -> bool:
        return column in table and any(not missing(v) and v != default for v in table[column])

    return (
        given("direction", "long")
        or any(given(c, None) for c in ("sl", "tp", "trail"))
        or given("size", 1.0)
        or given("slippage_bps", 0.0)
        or given("borrow_bps_per_day", 0.0)
    )


def has_walk_forward(table: pd.DataFrame) -> bool:
    """Whether any row of a leaderboard comes from a walk-forward."""
    return "wf_folds" in table and bool(table["wf_folds"].notna().any())


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
    walk = has_walk_forward(table)

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
    if uses_execution(table):
        columns += [c for c in EXECUTION_SHOWN if c in table and c not in columns and table[c].notna().any()]
    columns += [c for c in oos if c not in columns]
    known = set(REPORT_COLUMNS) | RUN_LEVEL_COLUMNS | HIDDEN_COLUMNS
    columns += [c for c in table.columns if c not in columns and c not in known and not c.startswith(GRID_PARAM_PREFIX)]
    return columns
