"""The leaderboard's files: `leaderboard.parquet`, `.csv` and `.md` (its title and Markdown), and the summary JSON.

Written by the rank step from the table `leaderboard.build` returns; the grid file is `grid_file`'s.
In a run's results folder `write` also stores the Parquet file's copy for the Athena table
(`layout.table_copy_url`, `LEADERBOARD_TABLE`): every column, typed by its name (`table_schema`).
"""

from __future__ import annotations

import io
import json
import math

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from backtest.data.storage import resolve, write_bytes_atomic
from backtest_airflow import layout
from backtest_airflow.layout import WF_IS_PREFIX
from backtest_airflow.planning import RunPlan
from backtest_airflow.report.columns import has_grid, has_walk_forward
from backtest_airflow.report.formatting import PERCENT_COLUMNS, PROBABILITY_COLUMNS, RATIO_COLUMNS
from backtest_airflow.report.grid_file import metric_type, table_copy
from backtest_airflow.report.results import strategies_text

# The leaderboard's column types in its Athena table's copy, by name, not by a run's values (which
# change a column's type: all null, or a count with a failed row's NaN); numbers named here by
# none of these are `grid_file.metric_type`'s (counts int64, the rest double).
TABLE_STRINGS = frozenset(
    ("symbol", "strategy", "status", "selection", "params", "next_params", "direction", "final_position",
     "position_now", "position_since", "select_by", "first_bar", "last_bar", "split", "data_source", "start", "end",
     "wf_last_params", "position_prev", "params_prev", "change")
)  # fmt: skip
TABLE_BOOLS = frozenset(("best", "synthetic"))
TABLE_INTEGERS = frozenset(
    ("rank", "combinations", "skipped", "wf_folds", "wf_efficiency_folds", "wf_param_changes",
     "max_consecutive_losses", "oos_max_consecutive_losses", "rank_prev", "rank_change")
)  # fmt: skip


def table_type(field: pa.Field) -> pa.DataType:
    """A leaderboard column's type in the table copy; a column named nowhere keeps a text or
    non-numeric type (so that the Glue table's test sees it), numbers and all-null become double."""
    if field.name in TABLE_STRINGS or pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
        return pa.string()
    if field.name in TABLE_BOOLS:
        return pa.bool_()
    if field.name in TABLE_INTEGERS:
        return pa.int64()
    if pa.types.is_integer(field.type) or pa.types.is_floating(field.type) or pa.types.is_null(field.type):
        return metric_type(field.name)
    return field.type


def table_schema(schema: pa.Schema) -> pa.Schema:
    """The leaderboard's table copy: the file's columns, each of `table_type`, and `run`."""
    return pa.schema([*(pa.field(f.name, table_type(f)) for f in schema), pa.field("run", pa.string())])


def _percent(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value) else f"{value:.2%}"


def title(plan: RunPlan, table: pd.DataFrame) -> str:
    """The leaderboard's title (also the report's), flagged when the candles were synthetic."""
    walk = f", walk-forward {plan.walk_forward}" if plan.walk_forward else ""
    text = f"Leaderboard {plan.start} to {plan.end} ({strategies_text(plan.strategies)}{walk}, by {plan.metric})"
    if table["synthetic"].eq(True).any():  # all-NaN (float) when every pair failed: no fillna(False)
        text += " - SYNTHETIC DATA"
    return text


def walk_forward_shown(rank_by: str | None) -> list[str]:
    """A walk-forward's columns the leaderboard's Markdown shows beside the stitched figures: the
    ranking metric out of sample and the folds' mean in sample, cagr both ways (annualised, so
    comparable across the windows' lengths), the efficiency and the parameter changes."""
    shown = ["oos_total_return"]
    for metric in dict.fromkeys([rank_by or "total_return", "cagr"]):
        shown += [f"oos_{metric}", WF_IS_PREFIX + metric]
    return [
        *dict.fromkeys(shown),
        "wf_efficiency",
        "wf_efficiency_median",
        "wf_param_changes",
        "wf_folds",
        "next_params",
    ]


def _ratio(value) -> str:
    return "" if pd.isna(value) else f"{value:.2f}"


def to_markdown(table: pd.DataFrame, title: str, cost: dict | None = None, rank_by: str | None = None) -> str:
    """The leaderboard as Markdown (best rows; `rank_by`, the run's ranking metric, for a walk-forward's columns).

    A walk-forward's shows its out-of-sample figures only (`walk_forward_shown`), not the whole
    window's grid best; a grid's, `dsr` beside `sharpe` and a note when figures are hindsight."""
    best = table[table["best"]]
    grid = has_grid(best)
    walk = has_walk_forward(best)
    shown = ["rank", "symbol", "strategy", "status"]
    if walk:
        shown += walk_forward_shown(rank_by)
    else:
        shown += ["params"] if grid or best["params"].nunique() > 1 else []
        shown += [
            "total_return",
            "buy_hold_return",
            "sharpe",
            *(["dsr"] if "dsr" in best and best["dsr"].notna().any() else []),
        ]
        shown += ["max_drawdown", "trades"]
        if best["oos_total_return"].notna().any():
            shown += ["oos_total_return", "oos_sharpe"]
    view = best[shown].copy()
    for column in view.columns:
        base = column.removeprefix("oos_").removeprefix(WF_IS_PREFIX)
        if base in RATIO_COLUMNS or base in PROBABILITY_COLUMNS:
            view[column] = view[column].map(_ratio)
        elif base in PERCENT_COLUMNS:
            view[column] = view[column].map(_percent)
    view = view.astype(object).where(view.notna(), "")
    text = f"# {title}\n\n" + view.to_markdown(index=False) + "\n"
    if walk:
        text += (
            "\nWalk-forward: ranked on the stitched out-of-sample figures (`oos_*`, the folds' test windows); "
            f"`{WF_IS_PREFIX}*` are the folds' mean in-sample figures of their chosen combinations, `wf_efficiency` "
            "the stitched out-of-sample cagr over their mean in-sample cagr (pooled), `wf_efficiency_median` the "
            "median of the folds' own ratios, `next_params` the last fold's choice. The whole window's grid best "
            "(`params` and the plain metric columns, chosen with hindsight) is in the Parquet and CSV files only.\n"
        )
    hindsight = (
        best[(best["selection"] == "in_sample_best") & (best["status"] == "ok")] if "selection" in best else best[:0]
    )
    if len(hindsight):
        counts = sorted({int(n) for n in hindsight["combinations"].dropna()})
        many = f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,} to {counts[-1]:,}"
        text += (
            f"\n**Hindsight:** {len(hindsight)} row(s) (`selection` in_sample_best) are the in-sample best of "
            f"{many} combinations: hindsight, not an out-of-sample result; `dsr` is the deflated Sharpe ratio of "
            "that choice (the probability that its true Sharpe exceeds what the best of the combinations tried "
            "would reach by luck alone).\n"
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
    copy = layout.table_copy_url(results_url, layout.LEADERBOARD_TABLE)
    if copy:
        data = contents[layout.LEADERBOARD_PARQUET]
        schema = table_schema(pq.read_schema(pa.BufferReader(data)))
        write_bytes_atomic(resolve(copy), table_copy(data, schema, layout.run_of(results_url)))
        paths[f"{layout.TABLES_DIR}/{layout.LEADERBOARD_TABLE}"] = copy
    grid = folder.join(layout.GRID_PARQUET)
    if grid.fs.get_file_info(grid.path).type == pafs.FileType.File:
        paths[layout.GRID_PARQUET] = grid.url
    return paths
