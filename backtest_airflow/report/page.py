"""The run report: one self-contained HTML page per DAG run, beside the leaderboard (no Airflow import).

`build_report(results_url, leaderboard_df, run_info)` returns the page; `write(...)` stores it
atomically as `report.html` in the run's results folder (S3 or local). This module gathers what
the page shows; `templates/report.html.j2` lays it out (via `templating`, autoescaped),
`sections` builds the sections that draw charts (`charts`), and `columns` and `formatting` say
which columns show and how. The page needs no network: styles, the table-sorting script and the
charts (matplotlib, Agg, rendered to inline SVG) are all inside it, and its
Content-Security-Policy forbids loading anything else and runs no script but that one (allowed by
its SHA-256 hash).

What it shows:

- a banner when any result comes from synthetic candles, and how the figures were chosen
  (`notes`: a grid's in-sample best is hindsight; a hold-out's or walk-forward's ranking);
- the leaderboard, one row per (pair, strategy) with its chosen combination (`params`), sortable
  by clicking a column header; failed (pair, strategy) rows with their status; with a grid,
  every (pair, strategy, combination) row of the grid file in a folded table below (up to
  `MAX_ALL_ROWS`);
- with several strategies, how they compare across pairs: per strategy, its ranked pairs, the
  median and mean of the ranking metric, on how many pairs it is the best strategy, and the
  metric's spread (box and strip plot);
- for each strategy whose grid varies two parameters, a heatmap of the metric the combinations
  were chosen by (the run's select_by) over those two, for its top
  `charts.heatmaps.HEATMAP_PAIRS` pairs, the chosen cell outlined, with the values in a folded
  table;
- the equity curve against buy-and-hold (close / first close, read from the candle store) and
  both drawdown curves, for the top and bottom `charts.curves.CURVES_EACH_END` ranked (pair,
  strategy) rows only, so that rendering stays cheap for 50 pairs (with a hold-out, the stored
  equity curve, and so the chart, covers the in-sample part), each on a linear and a log scale
  (a checkbox switches them, CSS only), with its trades and trade statistics (`trades`);
- the total return of every ranked row beside its buy-and-hold return;
- with a walk-forward (`walk_forward` set): the leaderboard's stitched out-of-sample figures
  (ranked on) beside the folds' mean in-sample ones and the efficiency; a chart and a table of
  each row's efficiency; and for the top and bottom rows, the stored curve, which is then the
  stitched out-of-sample equity, against buy-and-hold over the same test bars (close / first
  test close), with the folds' test starts marked, and the table of its folds (the ranges, the
  chosen parameters, their in-sample figures and out-of-sample return, each fold's efficiency),
  from the (pair, strategy)'s result JSON; the returns chart and the cards are then out of sample;
- the run's parameters, data range and, when `run_info["cost"]` is present, its cost summary.

`run_info` is a plain dict: the run plan's fields (`strategies`, `fee_bps`, `lookback_days`,
`holdout_days`, `rank_by`, `rank_on`, `start`, `end`, `pairs`, ...) plus `dag_id`, `run_id`,
`data_url` (the candle store, for buy-and-hold; the curves are drawn without it when absent),
`title` and the optional `cost` (a dict such as `cost.cost_summary()`, or text; shown as
given). Other scalar or list fields are listed with the parameters, so new run parameters show
up without a change here.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from backtest.data.storage import resolve, write_bytes_atomic
from backtest.simulation.metrics import LOWER_IS_BETTER
from backtest_airflow import layout, planning
from backtest_airflow.report import grid_file, notes, portfolio, sections
from backtest_airflow.report.cards import summary_cards
from backtest_airflow.report.charts.bars import returns_chart
from backtest_airflow.report.charts.comparison import strategies_chart, strategy_comparison
from backtest_airflow.report.columns import (
    HOLDOUT_IN_SAMPLE,
    best_rows,
    has_grid,
    has_walk_forward,
    is_synthetic,
    report_columns,
)
from backtest_airflow.report.formatting import PINNED_COLUMNS, leaderboard_view, missing
from backtest_airflow.report.results import strategies_text
from backtest_airflow.report.templating import render

REPORT_FILE = layout.REPORT_HTML  # the name `rank` writes it under
MAX_ALL_ROWS = 5000  # a bigger grid's every-row table stays in the grid file
# run_info fields that are not parameters (or are shown elsewhere).
NOT_PARAMETERS = frozenset(
    ("dag_id", "run_id", "title", "cost", "pairs", "chunks", "results_url", "data_url", "start", "end", "synthetic")
) | {"changes", "history"}  # the day-over-day sections' views (report.changes)
PARAMETER_ORDER = (
    "strategies",
    "window",
    "windows",
    "window_bars",
    "max_window_bars",
    "fee_bps",
    "lookback_days",
    "holdout_days",
    "walk_forward",
    "rank_by",
    "rank_on",
    "allow_failed_pairs",
    "history_days",
)
JOB_COLUMNS = (
    "job_name",
    "strategy",
    "pairs",
    "wall_seconds",
    "vcpu",
    "memory_mib",
    "billed_seconds",
    "cost_on_demand_usd",
)


def build_report(results_url: str, leaderboard_df: pd.DataFrame, run_info: dict) -> str:
    """The run's report as one self-contained HTML page; see the module docstring."""
    table = leaderboard_df
    best = best_rows(table)
    ranked = best[(best["status"] == "ok") & best["rank"].notna()].sort_values("rank")
    strategies = list(dict.fromkeys(best["strategy"].dropna())) if "strategy" in best else []
    several = len(strategies) > 1
    synthetic = is_synthetic(table, run_info)
    metric = _rank_metric(run_info)
    grid_shape = grid_file.grid_shape(results_url)
    # Every (pair, strategy, combination) row: the grid file's, or an older leaderboard's (with non-best rows).
    rows = grid_shape[0] if grid_shape else len(table)
    sweep = has_grid(best) or len(table) > len(best) or len(run_info.get("windows") or []) > 1
    holdout = bool(run_info.get("holdout_days")) or ("split" in table and table["split"].notna().any())
    walk = has_walk_forward(best)
    prefix = "oos_" if walk else ""  # the returns chart and the cards: the stitched test windows
    in_sample = HOLDOUT_IN_SAMPLE if holdout and not walk else frozenset()  # headed `IS ...`
    # The run's as-of moment: it saw only the candles closed before it (docs/operation.md, "A run's date").
    ident = [("as of", run_info.get("end")), ("DAG", run_info.get("dag_id")), ("run", run_info.get("run_id"))]
    every = None
    if sweep and rows <= MAX_ALL_ROWS:
        all_rows = grid_file.read_grid(results_url) if grid_shape else table
        every = leaderboard_view(all_rows, report_columns(all_rows, sweep=True), "all-rows-table", in_sample=in_sample)
    cost = run_info.get("cost")
    columns = report_columns(best, sweep=sweep, metric=metric)
    order = [layout.label_of(item) for item in run_info.get("strategies") or [] if layout.label_of(item) in strategies]
    comparison = strategy_comparison(best, metric, _lower_is_better(metric), order) if several else []
    return render(
        "report.html.j2",
        title=str(run_info.get("title") or "Backtest report"),
        synthetic=synthetic,
        ident=[(name, value) for name, value in ident if value],
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        selection_notes=notes.selection_notes(best, metric, run_info),
        cards=summary_cards(best, ranked, metric, several, prefix, holdout=bool(in_sample)),
        pairs=len(best),
        several=several,
        failed=best[best["status"] != "ok"].to_dict("records"),
        board=leaderboard_view(best, columns, "leaderboard-table", (*PINNED_COLUMNS, metric), in_sample),
        board_notes=notes.leaderboard_notes(best, columns),
        sweep=sweep,
        holdout=holdout,
        walk=sections.walk_forward_section(best, ranked, metric, several, run_info) if walk else None,
        rows=rows,
        max_all_rows=MAX_ALL_ROWS,
        grid_file=layout.GRID_PARQUET if grid_shape else None,
        every_board=every,
        metric=metric,
        comparison=sections.comparison_section(comparison, metric),
        strategies_svg=strategies_chart(comparison, metric) if comparison else None,
        heatmaps=sections.heatmaps_section(results_url, best, grid_shape[1] if grid_shape else [], order, walk),
        returns_svg=returns_chart(ranked, several, prefix) if len(ranked) else None,
        portfolio=portfolio.section(results_url),
        changes=run_info.get("changes"),  # report.changes: what changed since the previous run, the last runs
        history=run_info.get("history"),
        curves=sections.curves_section(results_url, best, run_info.get("data_url"), holdout, several, walk),
        parameters=_parameters(run_info),
        data=_data_range(table, run_info, synthetic),
        cost=None if cost in (None, "", {}) else _cost(cost),
        results_url=results_url,
        report_file=REPORT_FILE,
    )


def _rank_metric(run_info: dict) -> str:
    """The leaderboard's ranking column (as `planning.RunPlan.metric`, from the plan's fields)."""
    rank_by = str(run_info.get("rank_by") or "total_return")
    return planning.ranking_column(rank_by, run_info.get("rank_on"), run_info.get("walk_forward"))


def _lower_is_better(metric: str) -> bool:
    return metric.removeprefix("oos_") in LOWER_IS_BETTER


def _parameters(run_info: dict) -> list[tuple[str, object]]:
    keys = [k for k in PARAMETER_ORDER if k in run_info]
    keys += sorted(k for k in run_info if k not in keys and k not in NOT_PARAMETERS)
    if run_info.get("walk_forward") == "":
        keys.remove("walk_forward")  # off
    if run_info.get("windows") in ([run_info.get("window")], (run_info.get("window"),)):
        keys.remove("windows")  # one window: said once
    items: list[tuple[str, object]] = [
        (k, _parameter(k, run_info[k])) for k in keys if not isinstance(run_info[k], dict)
    ]
    if isinstance(run_info.get("chunks"), list):
        items.append(("jobs", len(run_info["chunks"])))
    pairs = run_info.get("pairs")
    if isinstance(pairs, list | tuple):
        items.append((f"pairs ({len(pairs)})", ", ".join(map(str, pairs))))
    return items


def _parameter(name: str, value: object) -> object:
    if name == "strategies" and isinstance(value, list):  # [{"name", "params"}]: as the user wrote them
        return strategies_text(value)
    return value


def _data_range(table: pd.DataFrame, run_info: dict, synthetic: bool) -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    if run_info.get("start") or run_info.get("end"):
        items.append(("period", f"{run_info.get('start', '?')} to {run_info.get('end', '?')} (end exclusive)"))
    for column, label, pick in (("first_bar", "first candle", min), ("last_bar", "last candle", max)):
        values = [str(v) for v in table[column] if not missing(v)] if column in table else []
        if values:
            items.append((label, pick(values)))
    if "split" in table:
        splits = sorted({str(v) for v in table["split"] if not missing(v)})
        if splits:
            items.append(("hold-out starts", ", ".join(splits)))
    if "bars" in table:
        bars = pd.to_numeric(table["bars"], errors="coerce").dropna()
        if len(bars):
            low, high = int(bars.min()), int(bars.max())
            items.append(("bars per pair", f"{low:,}" if low == high else f"{low:,} to {high:,}"))
    if "gaps" in table:
        gaps = pd.to_numeric(best_rows(table)["gaps"], errors="coerce").dropna()
        items.append(("missing hours (gaps), all pairs", f"{int(gaps.sum()):,}"))
    sources = sorted({str(v) for v in table["data_source"] if not missing(v)}) if "data_source" in table else []
    items.append(("data source", ", ".join(sources) or "unknown"))
    items.append(("synthetic", "YES: generated candles, not market data" if synthetic else "no"))
    if run_info.get("data_url"):
        items.append(("candle store", run_info["data_url"]))
    return items


def _cost(cost: object) -> dict:
    """The cost section: text as given, or a dict's fields and its per-job rows."""
    if not isinstance(cost, dict):
        return {"text_only": True, "text": cost}
    return {
        "text_only": False,
        "text": cost.get("text"),
        "fields": [(k, v) for k, v in cost.items() if k not in ("text", "per_job")],
        "jobs": cost.get("per_job") or [],
        "job_columns": JOB_COLUMNS,
    }


def write(leaderboard_df: pd.DataFrame, results_url: str, run_info: dict) -> str:
    """Build the report and store it atomically as `report.html` in the results folder; returns its URL."""
    page = build_report(results_url, leaderboard_df, run_info)
    return write_html(results_url, page)


def write_html(results_url: str, page: str) -> str:
    """Store a built page as the run's `report.html` (atomic on S3 and on disk); returns its URL."""
    loc = resolve(results_url).join(REPORT_FILE)
    write_bytes_atomic(loc, page.encode("utf-8"))
    return loc.url
