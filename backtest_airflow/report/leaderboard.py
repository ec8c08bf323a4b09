"""The `rank` step's leaderboard: a run's per-pair results read once, ranked, the grid file written on the way.

A run backtests every pair with every strategy of its plan; each (pair, strategy) result is in
that strategy's folder (`layout.strategy_results_url`). A result holds one parameter
combination or a grid of them, of which the job chose one (`best`, by its `select_by`, on
in-sample figures when there is a hold-out).

The leaderboard has one row per (pair, strategy): its chosen combination (`params`, e.g.
`fast=1d slow=5d`) and that combination's figures; hold-out figures are in the `oos_*` columns.
`selection` says how the figures were chosen (`selection_of`: `in_sample_best` is hindsight),
`dsr` is the deflated Sharpe of a grid's choice, `next_params` the combination the run would
trade next, and `TRADE_COLUMNS` (`oos_` ones too) a compact subset of the trade statistics.
Rows are ranked by the run's metric (descending, except `max_drawdown`, where smaller is better;
undefined values last), on in-sample or out-of-sample figures (`rank_on`).

With a walk-forward, `params` and the plain metric columns are still the whole window's grid (the
best combination chosen with hindsight; the report does not show them), `oos_*` are the stitched
out-of-sample figures (what the run ranks on), `next_params` the last fold's choice, and the `wf_*`
columns say how the folds went (`WF_COLUMNS`, see `walk_forward_columns`). A (pair, strategy)
that failed (no result: the job said why in `{symbol}.error.json`, or its task failed) follows,
unranked, with its status. A result whose last candle is more than `STALE_HOURS` older than the
window's end is `stale`: it did not see the whole window (did its refresh fail?), so it is not
ranked either. `best` is True on every row (the leaderboard holds chosen combinations only; in
the grid file it marks them).

The leaderboard's files are written by `leaderboard_files`, the grid file by `grid_file`, the
run's cost is `cost`'s.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pandas as pd

from backtest.data.storage import resolve
from backtest.params import HOUR_MS, parse_time_ms
from backtest.result_files import error_file, result_file
from backtest.simulation.metrics import FLAT_METRIC_NAMES, LOWER_IS_BETTER, flat_metrics
from backtest.simulation.position import POSITION_KEYS
from backtest_airflow import layout
from backtest_airflow.layout import WF_IS_PREFIX
from backtest_airflow.planning import RunPlan
from backtest_airflow.report.grid_file import GridWriter, grid_columns, grid_schema
from backtest_airflow.report.results import EXECUTION_COLUMNS, combinations, execution_columns, params_text, read_json

STALE_HOURS = 6
# The trade statistics the leaderboard carries (every one is in the result's `trade_stats`)
TRADE_COLUMNS = ("profit_factor", "expectancy", "sqn", "max_consecutive_losses")
OOS_COLUMNS = tuple(f"oos_{name}" for name in (*FLAT_METRIC_NAMES, *TRADE_COLUMNS))
# What the chosen combination holds at the as-of moment (backtest.simulation.position)
POSITION_COLUMNS = POSITION_KEYS  # the result's, as the job names them
# A walk-forward's columns (null without one): see `walk_forward_columns`.
WF_COLUMNS = (
    "wf_folds",
    "wf_efficiency",
    "wf_efficiency_median",
    "wf_efficiency_folds",
    "wf_param_changes",
    "wf_param_change_share",
    "wf_last_params",
    *(WF_IS_PREFIX + name for name in FLAT_METRIC_NAMES),
)
COLUMNS = (
    "rank",
    "symbol",
    "strategy",
    "status",
    "selection",
    "params",
    "next_params",
    *EXECUTION_COLUMNS[:4],  # direction, sl, tp, trail
    "best",
    *FLAT_METRIC_NAMES,
    "dsr",
    *TRADE_COLUMNS,
    "final_position",
    *POSITION_COLUMNS,
    "excess_return",
    *OOS_COLUMNS,
    *WF_COLUMNS,
    "combinations",
    "skipped",
    "select_by",
    "first_bar",
    "last_bar",
    "split",
    "synthetic",
    "data_source",
    "fee_bps",
    *EXECUTION_COLUMNS[4:],  # size, slippage_bps, borrow_bps_per_day
    "start",
    "end",
)


def pair_status(result: dict | None, error: dict | None, task_failure: str | None, end: str) -> str:
    if result is None:
        if error:
            return f"failed: {error['error']}"
        return f"failed: {task_failure}" if task_failure else "failed: no result"
    behind = (parse_time_ms(end) - HOUR_MS - parse_time_ms(result["last_bar"])) // HOUR_MS
    if behind > STALE_HOURS:
        return f"stale: last candle {result['last_bar']} is {behind}h before the window's end"
    return "ok"


def _excess(row: dict) -> float | None:
    total, buy_hold = row.get("total_return"), row.get("buy_hold_return")
    return None if total is None or buy_hold is None else total - buy_hold


def selection_of(result: dict) -> str:
    """How a result's figures were chosen (`backtest.job.SELECTIONS`): its `selection`, or for a
    result from before it, inferred as the job decides it: a walk-forward, else a hold-out
    (`split`), else the in-sample best of a grid (several combinations), else `none`."""
    if result.get("selection"):
        return result["selection"]
    if result.get("walk_forward"):
        return "walk_forward"
    if result.get("split"):
        return "holdout"
    return "in_sample_best" if len(result.get("sweep") or ()) > 1 else "none"


def trade_columns(stats: dict | None, prefix: str = "") -> dict:
    """TRADE_COLUMNS of a `trade_stats` object (None where absent, as in an older result)."""
    return {prefix + name: (stats or {}).get(name) for name in TRADE_COLUMNS}


def next_params(result: dict) -> str:
    """What the run would trade next (`next.params`, as text); for an older result, the last
    walk-forward fold's choice, else the chosen combination."""
    if result.get("next"):
        return params_text(result["next"]["params"])
    folds = (result.get("walk_forward") or {}).get("folds")
    if folds:
        return params_text(folds[-1]["params"])
    rows, best = combinations(result)
    return params_text(rows[best]["params"])


def walk_forward_columns(walk: dict) -> dict:
    """The `wf_*` leaderboard columns of a result's `walk_forward` object (docs/walk-forward.md).

    `wf_folds`; `wf_efficiency` (pooled: stitched out-of-sample cagr over the folds' mean
    in-sample cagr), `wf_efficiency_median` and `wf_efficiency_folds` (the median of the per-fold
    ratios and how many are defined), `wf_param_changes`
    and `wf_param_change_share` as the job reports them; `wf_last_params`, the last fold's chosen
    combination; and per metric `wf_is_<metric>`, the mean over the folds of the chosen
    combination's figure on its training window (the folds where it is defined; null if none),
    to set beside the stitched `oos_<metric>`."""
    folds = walk["folds"]
    columns = {
        "wf_folds": len(folds),
        "wf_efficiency": walk.get("efficiency"),
        "wf_efficiency_median": walk.get("efficiency_median"),
        "wf_efficiency_folds": walk.get("efficiency_folds"),
        "wf_param_changes": walk.get("param_changes"),
        "wf_param_change_share": walk.get("param_change_share"),
        "wf_last_params": params_text(folds[-1]["params"]) if folds else None,
    }
    in_sample = [flat_metrics(fold["in_sample"]) for fold in folds]
    for name in FLAT_METRIC_NAMES:
        values = [figures[name] for figures in in_sample if figures[name] is not None]
        columns[WF_IS_PREFIX + name] = math.fsum(values) / len(values) if values else None
    return columns


def _row(symbol: str, strategy: str, result: dict, status: str) -> dict:
    """The leaderboard row of one (pair, strategy) result: its chosen combination."""
    rows, best = combinations(result)
    grid = result.get("grid") or {}
    row = {
        "symbol": symbol,
        "strategy": strategy,
        "status": status,
        "selection": selection_of(result),
        "params": params_text(rows[best]["params"]),
        "next_params": next_params(result),
        **execution_columns(result.get("execution") or {}),
        "best": True,
        **flat_metrics(result),
        "dsr": result.get("dsr"),
        **trade_columns(result.get("trade_stats")),
        "final_position": result.get("final_position"),
        **{name: result.get(name) for name in POSITION_COLUMNS},
        **({f"oos_{name}": value for name, value in flat_metrics(result["oos"]).items()} if result.get("oos") else {}),
        **(trade_columns(result["oos"].get("trade_stats"), "oos_") if result.get("oos") else {}),
        **(walk_forward_columns(result["walk_forward"]) if result.get("walk_forward") else {}),
        "combinations": len(rows),
        "skipped": grid.get("skipped", 0),
        "select_by": grid.get("select_by"),
        "fee_bps": result["params"]["fee_bps"],
        **{k: result.get(k) for k in ("first_bar", "last_bar", "split", "synthetic", "data_source", "start", "end")},
    }
    row["excess_return"] = _excess(row)
    return row


class _Results:
    """Each (pair, strategy) result and error record of a run, read once (a few read ahead, see `samples`)."""

    def __init__(self, plan: RunPlan):
        self.plan = plan
        labels = [layout.label_of(s) for s in plan.strategies]
        self.folders = {label: resolve(layout.strategy_results_url(plan.results_url, label)) for label in labels}
        self._ahead: dict[tuple[str, str], dict | None] = {}

    def result(self, symbol: str, strategy: str) -> dict | None:
        key = (symbol, strategy)
        if key in self._ahead:
            return self._ahead.pop(key)
        return read_json(self.folders[strategy], result_file(symbol))

    def error(self, symbol: str, strategy: str) -> dict | None:
        return read_json(self.folders[strategy], error_file(symbol))

    def samples(self) -> list[dict]:
        """The first result of each strategy (kept for `result`): the grid file's schema comes from them."""
        found = []
        for strategy in self.folders:
            for symbol in self.plan.pairs:
                result = self._ahead.setdefault((symbol, strategy), self.result(symbol, strategy))
                if result is not None:
                    found.append(result)
                    break
        return found


def _results(plan: RunPlan, failed_tasks: dict[tuple[str, str], str], reader: _Results) -> Iterator[tuple]:
    """(symbol, strategy, result or None, status) for every (pair, strategy) of the run, pair by pair."""
    for symbol in plan.pairs:
        for item in plan.strategies:
            strategy = layout.label_of(item)  # the label: each entry's own results
            result = reader.result(symbol, strategy)
            error = None if result else reader.error(symbol, strategy)
            yield symbol, strategy, result, pair_status(result, error, failed_tasks.get((symbol, strategy)), plan.end)


def build(plan: RunPlan, failed_tasks: dict[tuple[str, str], str], grid: bool = True) -> pd.DataFrame:
    """The leaderboard of a run (see the module docstring for the rules).

    `failed_tasks`: why a (symbol, strategy)'s task failed, when it did. Reads every result once;
    with `grid` (what `rank` does) it writes the run's grid file on the way.
    """
    reader = _Results(plan)
    writer = GridWriter(grid_schema(reader.samples())) if grid else None
    rows = []
    for symbol, strategy, result, status in _results(plan, failed_tasks, reader):
        if result is None:
            rows.append({"symbol": symbol, "strategy": strategy, "status": status, "best": True})
            continue
        rows.append(_row(symbol, strategy, result, status))
        if writer:
            writer.add(grid_columns(symbol, strategy, result, status))
    if writer:
        writer.close(resolve(plan.results_url).join(layout.GRID_PARQUET))
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "rank"])
    table["best"] = table["best"].fillna(False).astype(bool)
    ok = table["status"] == "ok"
    ranked = table[ok].sort_values(
        plan.metric, ascending=plan.rank_by in LOWER_IS_BETTER, na_position="last", kind="stable"
    )
    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    order = {layout.label_of(item): i for i, item in enumerate(plan.strategies)}
    failed = table[~ok].sort_values(["symbol", "strategy"], key=lambda c: c.map(order) if c.name == "strategy" else c)
    parts = [part for part in (ranked, failed) if len(part)]
    board = pd.concat(parts, ignore_index=True) if parts else ranked
    integers = ("rank", "combinations", "skipped", "wf_folds", "wf_efficiency_folds", "wf_param_changes")
    integers += ("max_consecutive_losses", "oos_max_consecutive_losses")
    return board.reindex(columns=list(COLUMNS)).astype(dict.fromkeys(integers, "Int64"))
