"""The `rank` step: gather a run's per-pair results into a ranked leaderboard and the grid file (no Airflow import).

A run backtests every pair with every strategy of its plan; each (pair, strategy) result is in
that strategy's folder (`layout.strategy_results_url`). A result holds one parameter
combination or a grid of them, of which the job chose one (`best`, by its `select_by`, on
in-sample figures when there is a hold-out).

The leaderboard has one row per (pair, strategy): its chosen combination (`params`, e.g.
`fast=1d slow=5d`) and that combination's figures; hold-out figures are in the `oos_*` columns.
Rows are ranked by the run's metric (descending, except `max_drawdown`, where smaller is better;
undefined values last), on in-sample or out-of-sample figures (`rank_on`).

With a walk-forward, `params` and the plain metric columns are still the whole window's grid (the
best combination chosen with hindsight), `oos_*` are the stitched out-of-sample figures (what the
run ranks on), and the `wf_*` columns say how the folds went (`WF_COLUMNS`, see `walk_forward_columns`). A (pair, strategy)
that failed (no result: the job said why in `{symbol}.error.json`, or its task failed) follows,
unranked, with its status. A result whose last candle is more than `STALE_HOURS` older than the
window's end is `stale`: it did not see the whole window (did its refresh fail?), so it is not
ranked either. `best` is True on every row (the leaderboard holds chosen combinations only; in
the grid file it marks them).

The grid file (`layout.GRID_PARQUET`) has one row per (pair, strategy, combination) of every
result, failed ones aside: `symbol`, `strategy`, `status`, `combination` (the index in the
result's grid), `best`, `params` (text), one column per parameter as the result JSON spells it
(`param_fast` = "1d", `param_fast_bars` = 24; strategies share a column when they share a
parameter name, others are null), every metric, `excess_return` and, with a hold-out, the
`oos_*` metrics. It is written while the results are read, one row group at a time, so memory
stays bounded for 1,000 pairs x a large grid.

The run's cost: every job records its wall time and size in `_jobs/{job}.json` of its strategy's
folder; the summary adds them up over every strategy and prices them at Fargate rates (per
second, one-minute minimum per job).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from itertools import chain
from operator import itemgetter

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from backtest.data.storage import Location, list_dir, read_bytes, resolve, write_bytes_atomic
from backtest.job import JOBS_DIR
from backtest.params import HOUR_MS, parse_time_ms
from backtest.simulation.metrics import LOWER_IS_BETTER, METRIC_NAMES
from backtest_airflow import layout
from backtest_airflow.layout import WF_IS_PREFIX
from backtest_airflow.planning import RunPlan
from backtest_airflow.report.formatting import PERCENT_COLUMNS, RATIO_COLUMNS

STALE_HOURS = 6
FARGATE_MINIMUM_SECONDS = 60
OOS_COLUMNS = tuple(f"oos_{name}" for name in METRIC_NAMES)
# A walk-forward's columns (null without one): see `walk_forward_columns`.
WF_COLUMNS = (
    "wf_folds",
    "wf_efficiency",
    "wf_efficiency_folds",
    "wf_param_changes",
    "wf_param_change_share",
    "wf_last_params",
    *(WF_IS_PREFIX + name for name in METRIC_NAMES),
)
GRID_ROW_GROUP_ROWS = 131_072  # rows buffered before the grid file gets a row group
COLUMNS = (
    "rank",
    "symbol",
    "strategy",
    "status",
    "params",
    "best",
    *METRIC_NAMES,
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
    "start",
    "end",
)
GRID_KEYS = ("symbol", "strategy", "status", "combination", "best", "params")


def pair_status(result: dict | None, error: dict | None, task_failure: str | None, end: str) -> str:
    if result is None:
        if error:
            return f"failed: {error['error']}"
        return f"failed: {task_failure}" if task_failure else "failed: no result"
    behind = (parse_time_ms(end) - HOUR_MS - parse_time_ms(result["last_bar"])) // HOUR_MS
    if behind > STALE_HOURS:
        return f"stale: last candle {result['last_bar']} is {behind}h before the window's end"
    return "ok"


def params_text(params: dict) -> str:
    """A combination as text, as the user writes it: `fast=1d slow=5d` (a bar count's label, not its `_bars`)."""
    shown = [k for k in params if k != "fee_bps" and not (k.endswith("_bars") and k.removesuffix("_bars") in params)]
    return " ".join(f"{k}={_value_text(params[k])}" for k in shown)


def strategies_text(strategies: list[dict]) -> str:
    """A run's strategies and their grids as given: `sma_trend window=15d; sma_cross fast=1d:3d:1d slow=5d`."""
    return "; ".join(
        " ".join([item["name"], *(f"{k}={v}" for k, v in (item.get("params") or {}).items())]) for item in strategies
    )


def _value_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def combinations(result: dict) -> tuple[list[dict], int]:
    """Every combination a result holds, as {"params", <metrics>, "oos"?} rows, and the chosen one's index.

    One row unless the job ran a grid or a hold-out (then its `sweep`, in grid order).
    """
    if "sweep" not in result:
        params = {k: v for k, v in result["params"].items() if k != "fee_bps"}
        return [{"params": params, **{name: result.get(name) for name in METRIC_NAMES}}], 0
    rows = result["sweep"]
    best = next((i for i, row in enumerate(rows) if row["params"] == result["best"]), None)
    if best is None:
        raise ValueError(
            f"{result['symbol']} ({result.get('strategy')}): its best {result['best']} is not in its sweep"
        )
    return rows, best


def _excess(row: dict) -> float | None:
    total, buy_hold = row.get("total_return"), row.get("buy_hold_return")
    return None if total is None or buy_hold is None else total - buy_hold


def walk_forward_columns(walk: dict) -> dict:
    """The `wf_*` leaderboard columns of a result's `walk_forward` object (README, "Walk-forward").

    `wf_folds`; `wf_efficiency` and `wf_efficiency_folds` (the folds it averages), `wf_param_changes`
    and `wf_param_change_share` as the job reports them; `wf_last_params`, the last fold's chosen
    combination; and per metric `wf_is_<metric>`, the mean over the folds of the chosen
    combination's figure on its training window (the folds where it is defined; null if none),
    to set beside the stitched `oos_<metric>`."""
    folds = walk["folds"]
    columns = {
        "wf_folds": len(folds),
        "wf_efficiency": walk.get("efficiency"),
        "wf_efficiency_folds": walk.get("efficiency_folds"),
        "wf_param_changes": walk.get("param_changes"),
        "wf_param_change_share": walk.get("param_change_share"),
        "wf_last_params": params_text(folds[-1]["params"]) if folds else None,
    }
    for name in METRIC_NAMES:
        values = [fold["in_sample"][name] for fold in folds if fold["in_sample"].get(name) is not None]
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
        "params": params_text(rows[best]["params"]),
        "best": True,
        **{name: result.get(name) for name in METRIC_NAMES},
        **{f"oos_{name}": value for name, value in (result.get("oos") or {}).items()},
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
        self.folders = {
            s["name"]: resolve(layout.strategy_results_url(plan.results_url, s["name"])) for s in plan.strategies
        }
        self._ahead: dict[tuple[str, str], dict | None] = {}

    def result(self, symbol: str, strategy: str) -> dict | None:
        key = (symbol, strategy)
        if key in self._ahead:
            return self._ahead.pop(key)
        return _read_json(self.folders[strategy], f"{symbol}.json")

    def error(self, symbol: str, strategy: str) -> dict | None:
        return _read_json(self.folders[strategy], f"{symbol}.error.json")

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


def _read_json(folder: Location, name: str) -> dict | None:
    data = read_bytes(folder.join(name))
    return json.loads(data) if data else None


# -- the grid file ----------------------------------------------------------------------------


def _arrow_type(values: list) -> pa.DataType:
    """A column's type from its JSON values: bool, int64, float64 (ints and floats mixed) or string."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds or kinds <= {float, int}:
        return pa.int64() if kinds == {int} else pa.float64()
    if kinds == {bool}:
        return pa.bool_()
    return pa.string()


def grid_schema(samples: list[dict]) -> pa.Schema:
    """The grid file's columns for results like `samples` (one per strategy): see the module docstring."""
    params: dict[str, pa.DataType] = {}
    metrics: dict[str, pa.DataType] = {}
    oos = False
    for result in samples:
        rows, _ = combinations(result)
        for key in dict.fromkeys(k for row in rows for k in row["params"]):
            kind = _arrow_type([row["params"].get(key) for row in rows])
            seen = params.setdefault(key, kind)
            if seen != kind:  # two strategies' parameters of one name: numbers stay numbers, else text
                params[key] = pa.float64() if {seen, kind} <= {pa.int64(), pa.float64()} else pa.string()
        for name in METRIC_NAMES:
            kind = _arrow_type([row.get(name) for row in rows])
            metrics[name] = pa.float64() if metrics.get(name, kind) != kind else kind
        oos = oos or any("oos" in row for row in rows)
    fields = [
        ("symbol", pa.string()),
        ("strategy", pa.string()),
        ("status", pa.string()),
        ("combination", pa.int32()),
        ("best", pa.bool_()),
        ("params", pa.string()),
        *((layout.GRID_PARAM_PREFIX + key, kind) for key, kind in params.items()),
        *((name, metrics.get(name, pa.float64())) for name in METRIC_NAMES),
        ("excess_return", pa.float64()),
        *((f"oos_{name}", metrics.get(name, pa.float64())) for name in METRIC_NAMES if oos),
    ]
    return pa.schema(fields)


def grid_columns(symbol: str, strategy: str, result: dict, status: str) -> dict[str, list]:
    """One result's grid rows, column by column (keys as in `grid_schema`).

    Column-wise, with C-level transposes (`itemgetter`, `zip`): 1,000 pairs x 539 combinations
    are 539,000 rows, and a Python call per row and column would dominate the rank step."""
    rows, best = combinations(result)
    n = len(rows)
    params = [row["params"] for row in rows]
    keys = list(dict.fromkeys(chain.from_iterable(params)))
    columns: dict[str, list] = {
        "symbol": [symbol] * n,
        "strategy": [strategy] * n,
        "status": [status] * n,
        "combination": list(range(n)),
        "best": [i == best for i in range(n)],
    }
    values = dict(zip(keys, _transpose(params, keys), strict=True))
    shown = [k for k in keys if k != "fee_bps" and not (k.endswith("_bars") and k.removesuffix("_bars") in keys)]
    pieces = [[f"{k}={v if isinstance(v, str) else _value_text(v)}" for v in values[k]] for k in shown]
    columns["params"] = [" ".join(texts) for texts in zip(*pieces, strict=True)] if shown else [""] * n
    columns.update({layout.GRID_PARAM_PREFIX + k: column for k, column in values.items()})
    metrics = dict(zip(METRIC_NAMES, _transpose(rows, METRIC_NAMES), strict=True))
    columns.update(metrics)
    columns["excess_return"] = [
        None if t is None or b is None else t - b
        for t, b in zip(metrics["total_return"], metrics["buy_hold_return"], strict=True)
    ]
    if any("oos" in row for row in rows):
        oos = _transpose([row.get("oos") or {} for row in rows], METRIC_NAMES)
        columns.update({f"oos_{name}": column for name, column in zip(METRIC_NAMES, oos, strict=True)})
    return columns


def _transpose(records: list[dict], keys) -> list[list]:
    """[[record[key] for record in records] for key in keys], None where a record lacks the key."""
    keys = list(keys)
    if not keys:
        return []
    try:
        got = list(map(itemgetter(*keys), records))
    except KeyError:
        return [[record.get(key) for record in records] for key in keys]
    if len(keys) == 1:
        return [got]
    return [list(column) for column in zip(*got, strict=True)] if got else [[] for _ in keys]


class GridWriter:
    """The grid file, built in memory one row group at a time (compressed), stored atomically by `close`."""

    def __init__(self, schema: pa.Schema, row_group_rows: int = GRID_ROW_GROUP_ROWS):
        self.schema, self.row_group_rows = schema, row_group_rows
        self.sink = pa.BufferOutputStream()
        self.writer = pq.ParquetWriter(self.sink, schema, compression="zstd")
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = self.rows = 0

    def add(self, columns: dict[str, list]) -> None:
        n = len(columns["symbol"])
        arrays = [_array(columns.get(f.name), f.type, n) for f in self.schema]
        self.pending.append(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.pending_rows += n
        if self.pending_rows >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.Table.from_batches(self.pending), row_group_size=self.row_group_rows)
            self.rows += self.pending_rows
            self.pending, self.pending_rows = [], 0

    def close(self, loc: Location) -> str:
        self._flush()
        self.writer.close()
        write_bytes_atomic(loc, self.sink.getvalue())  # a pyarrow Buffer: no copy into bytes
        return loc.url


def _array(values: list | None, kind: pa.DataType, n: int) -> pa.Array:
    if values is None:
        return pa.nulls(n, kind)
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        if kind != pa.string():
            raise
    # A parameter name two strategies use with different types: its column is text.
    return pa.array([None if v is None else v if isinstance(v, str) else _value_text(v) for v in values], kind)


# -- the leaderboard ----------------------------------------------------------------------------


def _results(plan: RunPlan, failed_tasks: dict[tuple[str, str], str], reader: _Results) -> Iterator[tuple]:
    """(symbol, strategy, result or None, status) for every (pair, strategy) of the run, pair by pair."""
    for symbol in plan.pairs:
        for item in plan.strategies:
            strategy = item["name"]
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
    order = {item["name"]: i for i, item in enumerate(plan.strategies)}
    failed = table[~ok].sort_values(["symbol", "strategy"], key=lambda c: c.map(order) if c.name == "strategy" else c)
    parts = [part for part in (ranked, failed) if len(part)]
    board = pd.concat(parts, ignore_index=True) if parts else ranked
    integers = ("rank", "combinations", "skipped", "wf_folds", "wf_efficiency_folds", "wf_param_changes")
    return board.reindex(columns=list(COLUMNS)).astype(dict.fromkeys(integers, "Int64"))


def grid_shape(results_url: str) -> tuple[int, list[str]] | None:
    """A run's grid file's row count and column names (from its footer), or None when it has none."""
    loc = resolve(results_url).join(layout.GRID_PARQUET)
    if loc.fs.get_file_info(loc.path).type != pafs.FileType.File:
        return None
    metadata = pq.read_metadata(loc.path, filesystem=loc.fs)
    return metadata.num_rows, metadata.schema.to_arrow_schema().names


def read_grid(results_url: str, columns: list[str] | None = None, filters=None) -> pd.DataFrame:
    """Some columns of a run's grid file, the rows matching pyarrow `filters` (e.g. [("strategy", "==", "x")])."""
    loc = resolve(results_url).join(layout.GRID_PARQUET)
    return pq.read_table(loc.path, filesystem=loc.fs, columns=columns, filters=filters, use_threads=False).to_pandas()


# -- cost -------------------------------------------------------------------------------------


def job_cost(record: dict, prices: dict[str, float], strategy: str | None = None) -> dict:
    """One job's Fargate bill: per second of its size, with the one-minute minimum."""
    billed = max(FARGATE_MINIMUM_SECONDS, record["wall_seconds"])
    vcpu_hours, gb_hours = record["vcpu"] * billed / 3600, record["memory_mib"] / 1024 * billed / 3600
    return {
        "job_name": record["job_name"],
        **({"strategy": strategy} if strategy else {}),
        "pairs": len(record["symbols"]),
        "wall_seconds": record["wall_seconds"],
        "vcpu": record["vcpu"],
        "memory_mib": record["memory_mib"],
        "billed_seconds": billed,
        "cost_on_demand_usd": vcpu_hours * prices["vcpu_hour"] + gb_hours * prices["gb_hour"],
        "cost_spot_usd": vcpu_hours * prices["spot_vcpu_hour"] + gb_hours * prices["spot_gb_hour"],
    }


def cost_summary(plan: RunPlan, prices: dict[str, float]) -> dict:
    """Add up the run's job records (every strategy's): pairs, jobs, vCPU-seconds and their Fargate price."""
    jobs = []
    for item in plan.strategies:
        folder = resolve(layout.strategy_results_url(plan.results_url, item["name"])).join(JOBS_DIR)
        records = [_read_json(folder, name) for name in list_dir(folder) if name.endswith(".json")]
        jobs += [job_cost(record, prices, item["name"]) for record in records if record]
    on_demand = sum(job["cost_on_demand_usd"] for job in jobs)
    spot = sum(job["cost_spot_usd"] for job in jobs)
    summary = {
        "pairs": len(plan.pairs),
        "strategies": len(plan.strategies),
        "jobs": len(jobs),
        "jobs_planned": len(plan.chunks) * len(plan.strategies),
        "job_seconds": round(sum(job["wall_seconds"] for job in jobs), 3),
        "vcpu_seconds": round(sum(job["vcpu"] * job["wall_seconds"] for job in jobs), 3),
        "billed_vcpu_seconds": round(sum(job["vcpu"] * job["billed_seconds"] for job in jobs), 3),
        "cost_on_demand_usd": round(on_demand, 6),
        "cost_spot_usd": round(spot, 6),
        "prices": prices,
        "per_job": jobs,
    }
    times = f" x {len(plan.strategies)} strategies" if len(plan.strategies) > 1 else ""
    summary["text"] = (
        f"{summary['pairs']} pairs{times}, {summary['jobs']} jobs, {summary['vcpu_seconds']:.1f} vCPU-seconds "
        f"({summary['billed_vcpu_seconds']:.0f} billed), about ${on_demand:.4f} on-demand / ${spot:.4f} Spot"
    )
    return summary


# -- files ------------------------------------------------------------------------------------


def _percent(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value) else f"{value:.2%}"


def title(plan: RunPlan, table: pd.DataFrame) -> str:
    """The leaderboard's title (also the report's), flagged when the candles were synthetic."""
    walk = f", walk-forward {plan.walk_forward}" if plan.walk_forward else ""
    text = f"Leaderboard {plan.start} to {plan.end} ({strategies_text(plan.strategies)}{walk}, by {plan.metric})"
    if table["synthetic"].eq(True).any():  # all-NaN (float) when every pair failed: no fillna(False)
        text += " - SYNTHETIC DATA"
    return text


def has_grid(table: pd.DataFrame) -> bool:
    """Whether any (pair, strategy) chose among several combinations (a leaderboard of this module)."""
    return "combinations" in table and bool((pd.to_numeric(table["combinations"], errors="coerce") > 1).any())


def has_walk_forward(table: pd.DataFrame) -> bool:
    """Whether any row of a leaderboard (of this module) comes from a walk-forward."""
    return "wf_folds" in table and bool(table["wf_folds"].notna().any())


def walk_forward_shown(rank_by: str | None) -> list[str]:
    """A walk-forward's columns the leaderboard's Markdown shows beside the stitched figures: the
    ranking metric out of sample and the folds' mean in sample, cagr both ways (annualised, so
    comparable across the windows' lengths), the efficiency and the parameter changes."""
    shown = ["oos_total_return"]
    for metric in dict.fromkeys([rank_by or "total_return", "cagr"]):
        shown += [f"oos_{metric}", WF_IS_PREFIX + metric]
    return [*dict.fromkeys(shown), "wf_efficiency", "wf_param_changes", "wf_folds"]


def _ratio(value) -> str:
    return "" if pd.isna(value) else f"{value:.2f}"


def to_markdown(table: pd.DataFrame, title: str, cost: dict | None = None, rank_by: str | None = None) -> str:
    """The leaderboard as Markdown (best rows; `rank_by`, the run's ranking metric, for a walk-forward's columns)."""
    best = table[table["best"]]
    grid = has_grid(best)
    walk = has_walk_forward(best)
    shown = ["rank", "symbol", "strategy", "status"] + (["params"] if grid or best["params"].nunique() > 1 else [])
    shown += ["total_return", "buy_hold_return", "sharpe", "max_drawdown", "trades"]
    if walk:
        shown += walk_forward_shown(rank_by)
    elif best["oos_total_return"].notna().any():
        shown += ["oos_total_return", "oos_sharpe"]
    view = best[shown].copy()
    for column in view.columns:
        base = column.removeprefix("oos_").removeprefix(WF_IS_PREFIX)
        if base in RATIO_COLUMNS or column == "wf_efficiency":
            view[column] = view[column].map(_ratio)
        elif base in PERCENT_COLUMNS:
            view[column] = view[column].map(_percent)
    view = view.astype(object).where(view.notna(), "")
    text = f"# {title}\n\n" + view.to_markdown(index=False) + "\n"
    if walk:
        text += (
            "\nWalk-forward: ranked on the stitched out-of-sample figures (`oos_*`, the folds' test windows); "
            f"`{WF_IS_PREFIX}*` are the folds' mean in-sample figures of their chosen combinations, `wf_efficiency` "
            "the mean of out-of-sample cagr / in-sample cagr over the folds; the other columns and `params` are "
            "the whole window's best combination, chosen with hindsight.\n"
        )
    if grid:
        rows = int(pd.to_numeric(best["combinations"], errors="coerce").fillna(0).sum())
        by = ", ".join(sorted({str(v) for v in best["select_by"].dropna()}))
        text += f"\n`params` is each (pair, strategy)'s best combination of its grid (chosen by {by}); "
        text += f"all {rows:,} (pair, strategy, combination) rows are in {layout.GRID_PARQUET}.\n"
    if cost:
        text += f"\nRun cost: {cost['text']}.\n"
    return text


def write(
    table: pd.DataFrame, results_url: str, title: str, cost: dict | None = None, rank_by: str | None = None
) -> dict[str, str]:
    """Write the leaderboard files (and the cost summary) atomically; returns their URLs by name.

    The grid file is written by `build`, which reads the results it comes from."""
    folder = resolve(results_url)
    parquet = io.BytesIO()
    table.to_parquet(parquet, index=False)
    contents = {
        layout.LEADERBOARD_PARQUET: parquet.getvalue(),
        layout.LEADERBOARD_CSV: table.to_csv(index=False).encode(),
        layout.LEADERBOARD_MD: to_markdown(table, title, cost, rank_by).encode(),
    }
    if cost:
        contents[layout.SUMMARY_JSON] = json.dumps({"title": title, "cost": cost}, indent=1).encode()
    paths = {}
    for name, data in contents.items():
        loc = folder.join(name)
        write_bytes_atomic(loc, data)
        paths[name] = loc.url
    grid = folder.join(layout.GRID_PARQUET)
    if grid.fs.get_file_info(grid.path).type == pafs.FileType.File:
        paths[layout.GRID_PARQUET] = grid.url
    return paths
