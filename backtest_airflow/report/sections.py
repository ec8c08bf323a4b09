"""The report's sections beyond the leaderboard: strategy comparison, heatmaps, walk-forward, the pairs' curves.

`page.build_report` calls these; each returns what `templates/report.html.j2` shows of its section
(plain values and the charts' SVG), reading what it needs of the grid file and the results.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from backtest.data.storage import resolve
from backtest.params import parse_time_ms
from backtest.result_files import oos_equity_file, result_file
from backtest_airflow import layout
from backtest_airflow.report.charts.bars import efficiency_chart
from backtest_airflow.report.charts.base import row_label
from backtest_airflow.report.charts.curves import load_buy_hold, load_equity, pair_chart, shown_pairs
from backtest_airflow.report.charts.heatmaps import HEATMAP_PAIRS, Heatmap, heatmap, heatmaps_chart
from backtest_airflow.report.formatting import format_value, leaderboard_view, missing, sort_value
from backtest_airflow.report.formatting import label as column_label
from backtest_airflow.report.grid_file import read_grid
from backtest_airflow.report.results import params_text, read_json
from backtest_airflow.report.trades import trades_view


def comparison_section(comparison: list[dict], metric: str) -> list[dict]:
    """The strategy comparison's table cells: text as shown, full values for sorting (and tests)."""
    view = []
    for item in comparison:
        share = item["best_share"]
        cells = [
            ("strategy", item["strategy"], item["strategy"]),
            ("pairs", item["rows"], str(item["rows"])),
            ("ranked", item["ranked"], str(item["ranked"])),
            ("median", item["median"], format_value(metric, item["median"])),
            ("mean", item["mean"], format_value(metric, item["mean"])),
            ("best_pairs", item["best_pairs"], str(item["best_pairs"])),
            ("best_share", share, "" if share is None else f"{share:.0%}"),
        ]
        view.append({"strategy": item["strategy"], "cells": [(k, sort_value(v), text) for k, v, text in cells]})
    return view


def heatmaps_section(
    results_url: str, best: pd.DataFrame, grid_columns: list[str], order: list[str], walk: bool = False
) -> list[dict]:
    """For each strategy whose grid varies two parameters: its top pairs' heatmaps (one chart) and
    values; with a walk-forward (`walk`), the whole window's grid without its best outlined (that
    choice is hindsight: each fold chose on its own training window)."""
    if not grid_columns or not {"strategy", "select_by", "combinations"} <= set(best.columns):
        return []
    ranked = best[(best["status"] == "ok") & best["rank"].notna()].sort_values("rank")
    params = [c for c in grid_columns if c.startswith(layout.GRID_PARAM_PREFIX)]
    sections = []
    for strategy in dict.fromkeys([*order, *ranked["strategy"]]):
        mine = ranked[(ranked["strategy"] == strategy) & (ranked["combinations"] > 1)]
        select_by = mine["select_by"].dropna().unique()
        if not len(mine) or len(select_by) != 1 or select_by[0] not in grid_columns:
            continue
        metric = str(select_by[0])
        symbols = mine["symbol"].head(HEATMAP_PAIRS).tolist()
        rows = read_grid(
            results_url,
            ["symbol", "strategy", *([] if walk else ["best"]), *params, metric],
            [("strategy", "==", strategy), ("symbol", "in", symbols)],
        )
        maps = [heatmap(rows[rows["symbol"] == symbol], metric) for symbol in symbols]
        maps = [m for m in maps if m is not None]
        if not maps:
            continue
        title = f"{strategy}: {metric} over {maps[0].y} x {maps[0].x}, top {len(maps)} pair(s)"
        sections.append(
            {
                "strategy": strategy,
                "metric": metric,
                "svg": heatmaps_chart(maps, title),
                "tables": [_heatmap_table(m) for m in maps],
            }
        )
    return sections


def _heatmap_table(item: Heatmap) -> dict:
    rows = [
        {
            "label": label,
            "cells": [
                {"sort": sort_value(v), "text": format_value(item.metric, v), "best": item.best == (i, j)}
                for j, v in enumerate(item.values[i])
            ],
        }
        for i, label in enumerate(item.y_labels)
    ]
    return {"symbol": item.symbol, "strategy": item.strategy, "metric": item.metric, "y": item.y, "x": item.x,
            "x_labels": item.x_labels, "rows": rows}  # fmt: skip


def walk_forward_section(best: pd.DataFrame, ranked: pd.DataFrame, metric: str, several: bool, run_info: dict) -> dict:
    """The walk-forward section: each ranked row's efficiency (a chart and a table of the wf_* columns)."""
    columns = ["rank", "symbol", *(["strategy"] if "strategy" in best else []), "wf_folds", "wf_efficiency_folds",
               "wf_efficiency", "wf_efficiency_median", "wf_param_changes", "wf_param_change_share",
               "next_params"]  # fmt: skip
    if metric.startswith("oos_"):
        columns += [metric, layout.WF_IS_PREFIX + metric.removeprefix("oos_")]
    columns += [c for c in ("oos_cagr", layout.WF_IS_PREFIX + "cagr") if c not in columns]
    return {
        "text": run_info.get("walk_forward") or "",
        "svg": efficiency_chart(ranked, several) if len(ranked) else None,
        "board": leaderboard_view(ranked, [c for c in columns if c in ranked], "walk-forward-table"),
    }


def load_result(results_url: str, symbol: str) -> dict | None:
    """A pair's result JSON (`{symbol}.json`) in a results folder, or None when there is none."""
    return read_json(resolve(results_url), result_file(symbol))


def _folds_view(result: dict) -> dict:
    """A walk-forward result's folds as the report's table shows them: per fold its index (as the
    equity file's `fold` column), ranges, chosen parameters, in-sample figures (the `select_by`
    metric it was chosen by, and cagr), out-of-sample return and cagr, and efficiency."""
    select_by = (result.get("grid") or {}).get("select_by") or "total_return"
    metrics = [("in_sample", m) for m in dict.fromkeys((select_by, "cagr"))]
    metrics += [("out_of_sample", "total_return"), ("out_of_sample", "cagr")]
    heads = [f"IS {column_label(m)}" if part == "in_sample" else column_label(f"oos_{m}") for part, m in metrics]
    heads.append("efficiency")
    rows = []
    for k, fold in enumerate(result["walk_forward"]["folds"]):
        values = [(m, fold[part].get(m)) for part, m in metrics] + [("wf_efficiency", fold.get("efficiency"))]
        rows.append(
            {
                "fold": k,
                "train": (fold["train_start"], fold["train_end"]),
                "test": (fold["test_start"], fold["test_end"]),
                "params": params_text(fold["params"]),
                "cells": [{"sort": sort_value(v), "text": format_value(m, v)} for m, v in values],
            }
        )
    return {"heads": heads, "rows": rows, "select_by": select_by}


def curves_section(
    results_url: str, best: pd.DataFrame, data_url: str | None, holdout: bool, several: bool, walk: bool = False
) -> list[dict]:
    """The top and bottom rows' charts (`svg` None when the (pair, strategy) has no stored equity curve);
    with a hold-out, the in-sample chart and the out-of-sample one (`svg_oos`); with a walk-forward, the stitched out-of-sample curve with its folds marked, and its folds' table."""
    records = {(r["symbol"], r.get("strategy") if "strategy" in best else None): r for r in best.to_dict("records")}
    curves = []
    for symbol, strategy, end in shown_pairs(best):
        curve = {
            "symbol": symbol,
            "strategy": strategy,
            "end": end,
            "svg": None,
            "svg_oos": None,
            "folds": None,
            "trades": None,
        }
        curves.append(curve)
        folder = layout.strategy_results_url(results_url, strategy) if strategy else results_url
        loaded = load_equity(folder, symbol)
        if loaded is None:
            continue
        times, equity = loaded
        buy_hold = load_buy_hold(data_url, symbol, times)
        notes = []
        row = records[(symbol, strategy)]
        label = row_label(symbol, strategy, several)
        held_out = load_equity(folder, symbol, oos_equity_file) if holdout else None
        if held_out is not None:
            oos_times, oos_equity = held_out
            oos_buy_hold = load_buy_hold(data_url, symbol, oos_times)
            curve["svg_oos"] = pair_chart(label, row, oos_times, oos_equity, oos_buy_hold, "oos_")
            curve["svg_oos_log"] = pair_chart(label, row, oos_times, oos_equity, oos_buy_hold, "oos_", log=True)
            notes.append(
                "First chart: the in-sample part of the window, where the combination was chosen; second: the "
                "hold-out, that combination traded on the bars no choice saw (buy-and-hold from the hold-out's first close)."
            )
            if oos_buy_hold is None:
                notes.append("Out-of-sample buy-and-hold unavailable: the candles could not be read.")
        elif holdout:
            notes.append(
                "In-sample part of the window, where the combination was chosen (no out-of-sample curve stored)."
            )
        if row.get("selection") == "in_sample_best":
            notes.append(
                f"The in-sample best of {format_value('combinations', row.get('combinations'))} combinations over "
                "this very window: hindsight, not an out-of-sample result."
            )
        if buy_hold is None:
            notes.append("Buy-and-hold unavailable: the candles could not be read.")
        boundaries, prefix = None, ""
        result = load_result(folder, symbol) if walk else None
        if result and result.get("walk_forward"):
            folds = result["walk_forward"]["folds"]
            boundaries = [np.datetime64(parse_time_ms(fold["test_start"]), "ms") for fold in folds[1:]]
            prefix, curve["folds"] = "oos_", _folds_view(result)
        in_sample = held_out is not None
        curve["svg"] = pair_chart(label, row, times, equity, buy_hold, prefix, boundaries, in_sample=in_sample)
        curve["svg_log"] = pair_chart(
            label, row, times, equity, buy_hold, prefix, boundaries, log=True, in_sample=in_sample
        )
        curve["trades"] = trades_view(folder, symbol, result or load_result(folder, symbol))
        # a walk-forward's parameters are per fold (below) and, next, the last fold's
        params = f"next params {row.get('next_params')}" if prefix else row.get("params", row.get("window"))
        chosen = (", " if prefix else " ").join(str(v) for v in (strategy, params) if not missing(v))
        curve["chosen"] = f" ({chosen})" if chosen else ""
        curve["notes"] = " ".join(notes)
    return curves
