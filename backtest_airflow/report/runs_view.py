"""What the Backtests page shows besides each run's leaderboard: the runs by date with each date's
latest successful run and its previous run (the one its "What changed" compares with), and one
pair's history over the last runs (`history.read_history`): its ranking metric, rank, position
and chosen parameters per date, as a chart and a table.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import pandas as pd
import pyarrow.fs as pafs

from backtest.data.storage import Location
from backtest_airflow import layout
from backtest_airflow.report import history
from backtest_airflow.report.charts.history import history_chart
from backtest_airflow.report.columns import (
    best_rows,
    has_grid,
    has_hindsight,
    has_walk_forward,
    is_synthetic,
    report_columns,
)
from backtest_airflow.report.formatting import format_value, leaderboard_view, missing

log = logging.getLogger("backtest_airflow.ui")

SYMBOL_PATTERN = re.compile(r"[A-Z0-9]{2,30}")
LABEL_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
METRIC_PATTERN = re.compile(r"[a-z_]{1,64}")
DEFAULT_METRIC = "total_return"
HISTORY_COLUMNS = ["symbol", "strategy", "rank", "status", "next_params", "position_now", "position_since"]


def run_view(
    date: str, run: str, folder: Location, read: Callable[[Location], pd.DataFrame | None], report_url: str
) -> dict:
    """One run's section of the page; a leaderboard that cannot be read or shown gets a note
    (`board` None), not a failed page. `read` reads a run folder's leaderboard (None: gone)."""
    view = {"date": date, "run": run, "anchor": f"run-{date}-{run}", "board": None}
    try:
        table = read(folder)
        if table is None:
            raise ValueError("leaderboard.parquet is gone")
        best = best_rows(table)
        sweep = len(table) > len(best) or has_grid(best)
        columns = report_columns(best, sweep=sweep, compact=True)
        names = (layout.REPORT_HTML, layout.GRID_PARQUET)
        infos = folder.fs.get_file_info([folder.join(name).path for name in names])  # one call
        has_report, has_grid_file = (info.type == pafs.FileType.File for info in infos)
        return {
            **view,
            "board": leaderboard_view(best, columns, f"leaderboard-{date}-{run}"),
            "failed": int((best["status"] != "ok").sum()),
            "synthetic": is_synthetic(table),
            "hindsight": has_hindsight(best),  # some rows are a grid's in-sample best
            "walk": has_walk_forward(best),  # out-of-sample figures only
            "pairs": int(best["symbol"].nunique()),
            "strategies": sorted(best["strategy"].dropna().unique()) if "strategy" in best else [],
            "symbols": sorted(best["symbol"].dropna().unique()),
            "grid_file": layout.GRID_PARQUET if has_grid_file and sweep else None,
            "url": folder.url,
            "report_url": report_url if has_report else None,
        }
    except Exception as exc:  # any malformed file: missing columns, wrong types, not Parquet
        log.warning("cannot show the leaderboard of %s: %s", folder.url, exc)
        return view


def dates_view(data_url: str, runs: list[tuple[str, str]]) -> dict:
    """For the page's runs ((date, run folder) pairs, newest first): per date its runs, which one is
    the date's latest successful run (its pointer), and that date's previous run (date, run), the
    latest successful run of the most recent earlier date.

    Reads one pointer per date (at most one more date than the page shows: the oldest date's previous).
    """
    shown = sorted({date for date, _ in runs}, reverse=True)
    if not shown:
        return {"dates": [], "runs": {}}
    pointers = history.latest_runs(data_url, shown[0], runs=len(shown) + 1)  # oldest first
    latest = {ref.date: ref.run for ref in pointers}
    dates, by_run = [], {}
    for date in shown:
        earlier = [ref for ref in pointers if ref.date < date]
        previous = {"date": earlier[-1].date, "run": earlier[-1].run} if earlier else None
        folders = [run for d, run in runs if d == date]
        dates.append({"date": date, "latest": latest.get(date), "previous": previous, "runs": folders})
        for run in folders:
            by_run[(date, run)] = {"latest": latest.get(date) == run, "previous": previous}
    return {"dates": dates, "runs": by_run}


def check_pair(symbol: str, strategy: str | None, metric: str | None) -> str | None:
    """What is wrong with a history request's values, in one line (None: nothing)."""
    if not SYMBOL_PATTERN.fullmatch(symbol):
        return f"symbol {symbol!r} is not a pair symbol such as BTCUSDT"
    if strategy and not LABEL_PATTERN.fullmatch(strategy):
        return f"strategy {strategy!r} is not a strategy label"
    if metric and not METRIC_PATTERN.fullmatch(metric):
        return f"metric {metric!r} is not a leaderboard column"
    return None


def pair_history_view(
    data_url: str, symbol: str, strategy: str | None = None, metric: str | None = None, runs: int = history.HISTORY_RUNS
) -> dict:
    """One pair's last `runs` dates (each date's latest successful run), per strategy label: the
    metric's line chart and a row per date (rank, metric, status, position, since, next params).
    `strategy` None: every label the pair has; `metric` None: `DEFAULT_METRIC`."""
    metric = metric or DEFAULT_METRIC
    frame = history.read_history(data_url, "9999-12-31", [*HISTORY_COLUMNS, metric], runs=runs)
    frame = frame[frame["symbol"] == symbol] if len(frame) else frame
    if strategy and len(frame):
        frame = frame[frame["strategy"] == strategy]
    view = {"symbol": symbol, "strategy": strategy, "metric": metric, "rows": [], "svg": None, "dates": 0}
    if not len(frame):
        return view
    has_metric = metric in frame and frame[metric].notna().any()
    values = pd.to_numeric(frame[metric], errors="coerce") if has_metric else pd.Series(float("nan"), frame.index)
    frame = frame.assign(value=values, label=frame["strategy"].fillna(""))
    view["dates"] = int(frame["date"].nunique())
    view["metric_found"] = bool(has_metric)
    if has_metric:
        title = f"{symbol}: {metric} over the last {view['dates']} runs"
        view["svg"] = history_chart(frame, metric, title)
    for record in frame.sort_values(["date", "label"], ascending=[False, True]).to_dict("records"):
        view["rows"].append({
            "date": record["date"], "run": record["run"], "strategy": record["label"],
            "rank": "" if missing(record.get("rank")) else int(record["rank"]),
            "value": format_value(metric, record["value"]), "status": record.get("status") or "",
            "position": record.get("position_now") or "", "since": record.get("position_since") or "",
            "params": record.get("next_params") or "",
        })  # fmt: skip
    return view
