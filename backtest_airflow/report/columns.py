"""Which rows and columns the leaderboard tables show, and what a run's leaderboard holds (a grid, a walk-forward).

Shared by the run report and the Backtests page, as `formatting` is; how each value is written is `formatting`'s.
"""

from __future__ import annotations

import pandas as pd

from backtest.simulation.metrics import FLAT_METRIC_NAMES
from backtest_airflow.layout import GRID_PARAM_PREFIX, WF_IS_PREFIX
from backtest_airflow.report.formatting import RETURN_COLUMNS, metric_of, missing, truthy

# The trade statistics of the leaderboard (`leaderboard.TRADE_COLUMNS`; every one is in the report's trades sections).
TRADE_SHOWN = ("profit_factor", "expectancy", "sqn", "max_consecutive_losses")
REPORT_COLUMNS = (
    "rank",
    "symbol",
    "status",
    *RETURN_COLUMNS,
    "sharpe",
    "dsr",
    "psr",
    "sortino",
    "calmar",
    "max_drawdown",
    "win_rate",
    "trades",
    "exposure",
    *TRADE_SHOWN,
)
# With a hold-out, the figures of the in-sample part (headed `IS ...` in the report's tables).
HOLDOUT_IN_SAMPLE = frozenset(c for c in REPORT_COLUMNS if c not in ("rank", "symbol", "status"))
# The Backtests page's shorter tables.
COMPACT_COLUMNS = ("rank", "symbol", "status", "total_return", "buy_hold_return", "sharpe", "max_drawdown", "trades")
# Hold-out figures shown when the run has them (every oos_* column is in the Parquet/CSV files).
OOS_SHOWN = (
    "oos_total_return", "oos_buy_hold_return", "oos_sharpe", "oos_psr", "oos_max_drawdown",
    *(f"oos_{name}" for name in TRADE_SHOWN),
)  # fmt: skip
# A walk-forward's view: out-of-sample figures only (with the ranking metric's stitched and mean
# in-sample figures after the first two), never the whole window's grid best (WHOLE_WINDOW).
WF_SHOWN = (
    "oos_total_return", "oos_buy_hold_return", "oos_cagr", WF_IS_PREFIX + "cagr", "wf_efficiency",
    "wf_efficiency_median", "wf_param_change_share", "wf_folds", "next_params", "oos_sharpe", "oos_psr",
    "oos_sortino", "oos_max_drawdown", "oos_win_rate", "oos_trades", "oos_exposure",
    *(f"oos_{name}" for name in TRADE_SHOWN),
)  # fmt: skip
# ... and on the Backtests page's shorter tables.
COMPACT_WF_SHOWN = ("oos_total_return", "oos_buy_hold_return", "wf_efficiency", "oos_max_drawdown", "oos_trades",
                    "next_params")  # fmt: skip
# A walk-forward leaderboard's columns of the whole window's grid best (chosen with hindsight), or of
# how it traded: in the files, never in its tables.
WHOLE_WINDOW = frozenset(
    (
        *FLAT_METRIC_NAMES, "excess_return", "dsr", *TRADE_SHOWN, "params", "window", "sl", "tp", "trail",
        "final_position", "selection", "wf_last_params",
    )
)  # fmt: skip
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
# ... and with a walk-forward: the stitched test windows' trades (the stops are each fold's choice).
WF_EXECUTION_SHOWN = (
    "direction", "oos_long_trades", "oos_short_trades", "oos_exits_signal", "oos_exits_stop",
    "oos_exits_take_profit", "oos_exits_ruin", "size", "slippage_bps", "borrow_bps_per_day",
)  # fmt: skip
HIDDEN_COLUMNS = frozenset(
    (
        *EXECUTION_SHOWN,
        # day over day: the report's "What changed" section says them (they are in the files)
        "rank_prev",
        "rank_change",
        "position_prev",
        "params_prev",
        "metric_prev",
        "metric_change",
        "change",
        "window_bars",
        "bars",
        "gaps",
        "volatility",
        "combinations",
        "skipped",
        "select_by",
        "combination",
        "selection",
        "next_params",
        *(f"oos_{name}" for name in (*FLAT_METRIC_NAMES, *TRADE_SHOWN)),
        *(WF_IS_PREFIX + name for name in FLAT_METRIC_NAMES),
        "wf_efficiency_folds",
        "wf_efficiency_median",
        "wf_param_changes",
    )
)
# `cagr` = E^(8760 / bars) - 1 is `total_return` over 8,760 bars: over a one-year window (every
# row's bars within ONE_YEAR_BARS +- YEAR_TOLERANCE_BARS), or when no row's differs by
# SAME_AS_SHOWN (as the tables round), the report leaves the column out and says so.
ONE_YEAR_BARS, YEAR_TOLERANCE_BARS = 8760, 24
SAME_AS_SHOWN = 0.00005


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


def cagr_repeats_return(table: pd.DataFrame) -> float | None:
    """When `cagr` only repeats `total_return` (see ONE_YEAR_BARS): the largest |cagr - total_return|
    over the rows with both (what the page says it leaves out), else None."""
    if "cagr" not in table or "total_return" not in table:
        return None
    both = table[["cagr", "total_return"]].apply(pd.to_numeric, errors="coerce").dropna()
    if both.empty:
        return None
    gap = (both["cagr"] - both["total_return"]).abs()
    bars = pd.to_numeric(table.loc[both.index, "bars"], errors="coerce") if "bars" in table else None
    one_year = (
        bars is not None and bars.notna().all() and bool(((bars - ONE_YEAR_BARS).abs() <= YEAR_TOLERANCE_BARS).all())
    )
    return float(gap.max()) if one_year or bool((gap < SAME_AS_SHOWN).all()) else None


def has_hindsight(table: pd.DataFrame) -> bool:
    """Whether any row's figures are a grid's in-sample best (`selection` in_sample_best)."""
    return "selection" in table and bool((table["selection"] == "in_sample_best").any())


def _given(table: pd.DataFrame, column: str) -> bool:
    return column in table and bool(table[column].notna().any())


def report_columns(
    table: pd.DataFrame, sweep: bool = False, compact: bool = False, metric: str | None = None
) -> list[str]:
    """The columns a leaderboard table shows: REPORT_COLUMNS (COMPACT_COLUMNS when `compact`), with
    `strategy` after `symbol`, `selection` after `status` when a row is a grid's in-sample best (hindsight),
    and the chosen `params` (`window` in older leaderboards) after them in a grid or when they
    differ between rows; unless compact, `position_now` after the returns; `dsr` only when a row has one (a grid), `cagr` not when it repeats
    `total_return` (`cagr_repeats_return`); unless compact, also `fee_bps` when it differs,
    hold-out figures when present (first when the run ranks on them, `metric` oos_*; else the
    hold-out's return and buy-and-hold right after the in-sample returns), and any
    column this module does not know that has a value, so that new leaderboard columns are not
    hidden (the grid file's parameter columns are, `params` says it).

    A walk-forward's table (`walk_forward_view`) shows out-of-sample figures only."""
    if has_walk_forward(table):
        return walk_forward_view(table, compact, metric)
    columns = [c for c in (COMPACT_COLUMNS if compact else REPORT_COLUMNS) if c in table]
    columns = [c for c in columns if c != "dsr" or _given(table, "dsr")]
    if not compact and cagr_repeats_return(table) is not None:
        columns.remove("cagr")

    def varies(column: str) -> bool:
        return column in table and len({str(v) for v in table[column] if not missing(v)}) > 1

    if "strategy" in table:
        columns.insert(columns.index("symbol") + 1 if "symbol" in columns else 0, "strategy")
    at = columns.index("status") + 1 if "status" in columns else len(columns)
    if has_hindsight(table) and not compact:  # the Backtests page: a badge on the run
        columns.insert(at, "selection")
        at += 1
    for chosen in ("params", "window"):
        if chosen in table and (sweep or varies(chosen)):
            columns.insert(at, chosen)
            at += 1
    if compact:
        return columns
    oos = [c for c in OOS_SHOWN if _given(table, c)]
    if metric and metric.startswith("oos_") and oos:  # ranked on the hold-out: its figures first
        columns[at:at] = list(dict.fromkeys([*oos[:2], *([metric] if metric in table else []), *oos[2:]]))
    if _given(table, "position_now"):  # what the strategy says now, in view without scrolling
        columns.insert(columns.index("excess_return") + 1 if "excess_return" in columns else at, "position_now")
    if oos and not (metric and metric.startswith("oos_")):  # ranked in sample: the hold-out's returns beside
        anchors = [c for c in ("position_now", "excess_return") if c in columns]
        after = columns.index(anchors[0]) + 1 if anchors else at
        columns[after:after] = [c for c in ("oos_total_return", "oos_buy_hold_return") if c in oos and c not in columns]
    if varies("fee_bps"):
        columns.append("fee_bps")
    if uses_execution(table):
        columns += [c for c in EXECUTION_SHOWN if _given(table, c) and c not in columns]
    columns += [c for c in oos if c not in columns]
    known = set(REPORT_COLUMNS) | RUN_LEVEL_COLUMNS | HIDDEN_COLUMNS
    columns += [c for c in table.columns if c not in columns and c not in known and not c.startswith(GRID_PARAM_PREFIX)
                and _given(table, c)]  # fmt: skip
    return columns


def walk_forward_view(table: pd.DataFrame, compact: bool = False, metric: str | None = None) -> list[str]:
    """A walk-forward leaderboard's columns: the names (`rank`, `symbol`, `strategy`, `status`), then
    COMPACT_WF_SHOWN when compact, else WF_SHOWN with the ranking column `metric` and the folds' mean
    in-sample figure of it after the first two, `fee_bps` when it differs, WF_EXECUTION_SHOWN when
    the run uses the execution options, and any column this module does not know. Never `params`
    or the other whole-window figures (WHOLE_WINDOW: the grid's best chosen with hindsight)."""
    columns = [c for c in ("rank", "symbol", "strategy", "status") if c in table]
    ranking = [metric, WF_IS_PREFIX + metric_of(metric)] if metric and metric.startswith("oos_") else []
    block = COMPACT_WF_SHOWN if compact else [*WF_SHOWN[:2], *ranking, *WF_SHOWN[2:]]
    columns += [c for c in dict.fromkeys(block) if c in table and c not in columns]
    if compact:
        return columns
    if "fee_bps" in table and len({str(v) for v in table["fee_bps"] if not missing(v)}) > 1:
        columns.append("fee_bps")
    if uses_execution(table):
        columns += [c for c in WF_EXECUTION_SHOWN if _given(table, c) and c not in columns]
    known = set(REPORT_COLUMNS) | RUN_LEVEL_COLUMNS | HIDDEN_COLUMNS | WHOLE_WINDOW
    columns += [c for c in table.columns if c not in columns and c not in known and not c.startswith(GRID_PARAM_PREFIX)
                and _given(table, c)]  # fmt: skip
    return columns
