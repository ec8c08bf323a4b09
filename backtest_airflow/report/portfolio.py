"""Portfolio across pairs: per strategy label, an equal-weight portfolio of the run's ranked pairs and
the honest selection test, written as `portfolio.parquet` by the rank step (no Airflow import).

For the N ranked pairs of a label (leaderboard rows with status "ok" and a rank), each pair gets
1/N of the capital at the window's start and is never rebalanced, so on the union U of the pairs'
hours (the open times of their `{symbol}.equity.parquet`)

    P_t = (1/N) sum_i E_i(t),   E_i(t) = E_i at pair i's last bar at or before t, 1.0 before its first bar

(a pair's equity carried forward over its gaps; before its first bar its share is still cash).
The equal-weight buy-and-hold of the same pairs is the same mean of B_i = close_i / first close_i
at pair i's own bars, from the candle store, with the same rules. The metrics (`EQUITY_METRICS`)
are the job's formulas (`compute_metrics_block`) on P over U, with no trades and no positions.

With a hold-out or a walk-forward, the selection test: the top `portfolio_top` pairs by the run's
`rank_by` on IN-SAMPLE figures only, best first (`LOWER_IS_BETTER` for max_drawdown; undefined
figures last; ties by symbol), then their equal-weight OUT-OF-SAMPLE curve and buy-and-hold:

- hold-out: the in-sample figure is the result's top-level one (the leaderboard's plain
  `<rank_by>` column); the curve `{symbol}.oos.equity.parquet`;
- walk-forward: the FIRST fold's in-sample figure (`walk_forward.folds[0].in_sample[rank_by]`),
  the only in-sample figure known before the stitched out-of-sample period starts (later folds'
  training windows overlap earlier test windows); the curve `{symbol}.equity.parquet`, which is
  then the stitched out-of-sample curve (so `portfolio` is out of sample as well).

`portfolio.parquet` is long: `label`, `curve` (`CURVES`), `open_time` (timestamp[ms, UTC]), `equity`.
"""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from backtest.data.storage import Location, read_bytes, read_parquet_bytes, resolve, write_bytes_atomic
from backtest.result_files import equity_file, oos_equity_file, result_file
from backtest.simulation.execution import EXIT_KINDS
from backtest.simulation.metrics import METRIC_NAMES, TradeCounts, compute_metrics_block, score
from backtest_airflow import layout
from backtest_airflow.planning import RunPlan
from backtest_airflow.report.charts.curves import load_buy_hold
from backtest_airflow.report.formatting import format_value, missing, sort_value
from backtest_airflow.report.formatting import label as column_label
from backtest_airflow.report.results import read_json

log = logging.getLogger("backtest_airflow.report.portfolio")

CURVES = ("portfolio", "buy_hold", "selected", "selected_buy_hold")
CURVE_NAMES = {
    "portfolio": "portfolio (all ranked pairs)",
    "buy_hold": "buy & hold (all ranked pairs)",
    "selected": "selected, out of sample",
    "selected_buy_hold": "buy & hold of the selected",
}
EQUITY_METRICS = tuple(
    n
    for n in METRIC_NAMES
    if n in {"total_return", "cagr", "volatility", "sharpe", "sortino", "psr", "max_drawdown", "calmar"}
)
SCHEMA = pa.schema(
    [
        ("label", pa.string()),
        ("curve", pa.string()),
        ("open_time", pa.timestamp("ms", tz="UTC")),
        ("equity", pa.float64()),
    ]
)
Curve = tuple[np.ndarray, np.ndarray]  # (open times as datetime64[ms], equity), times ascending


def equal_weight(curves: list[Curve]) -> Curve | None:
    """The mean of `curves` on the union of their times: each carried forward over its gaps, 1.0
    before its first time (see the module docstring); None for no curve."""
    if not curves:
        return None
    times = np.unique(np.concatenate([t for t, _ in curves]))
    total = np.zeros(len(times))
    for t, e in curves:
        last = np.searchsorted(t, times, side="right") - 1  # the curve's last time at or before each
        total += np.where(last >= 0, e[np.maximum(last, 0)], 1.0)
    return times, total / len(curves)


def curve_metrics(equity: np.ndarray) -> dict:
    """EQUITY_METRICS of one curve by the job's formulas: no trades, no positions (a curve that
    reaches 0 counts as ruined, so its returns after that are 0 as the job's are)."""
    zero = np.zeros(1, dtype=np.int64)
    exits = np.zeros((1, len(EXIT_KINDS)), dtype=np.int64)
    exits[0, EXIT_KINDS.index("ruin")] = int((equity == 0.0).any())
    counts = TradeCounts(zero, zero, zero, zero, zero, exits)
    row = equity.astype(np.float64)[np.newaxis, :]
    return compute_metrics_block(row, np.zeros(row.shape, np.int8), row[0], 0, counts, EQUITY_METRICS)[0]


def select(figures: dict[str, float | None], rank_by: str, top: int) -> list[str]:
    """The `top` symbols by their in-sample `rank_by` figures: best first (`score`: lower is better
    for max_drawdown, undefined last), ties by symbol."""
    return sorted(figures, key=lambda s: (-score({rank_by: figures[s]}, rank_by), s))[:top]


def _figure(value: object) -> float | None:
    return None if missing(value) else float(value)


def load_curve(folder: Location, name: str) -> Curve | None:
    """(open times, equity) of a stored curve file, or None when it is missing or empty."""
    data = read_bytes(folder.join(name))
    if not data:
        return None
    table = read_parquet_bytes(data, columns=["open_time", "equity"])
    times = table.column("open_time").cast(pa.timestamp("ms")).to_numpy()
    return (times, table.column("equity").to_numpy().astype(np.float64)) if len(times) else None


def _pair_curves(folder: Location, symbols: list[str], name, data_url: str | None) -> tuple[Curve | None, Curve | None]:
    """The equal-weight curve of `symbols`' stored curves (`name(symbol)`) and their buy-and-hold
    (None when any pair's file or candles are missing: a part of the pairs would mislead)."""
    curves, holds = [], []
    for symbol in symbols:
        curve = load_curve(folder, name(symbol))
        if curve is None:
            log.warning("portfolio: no %s for %s", name(symbol), symbol)
            return None, None
        curves.append(curve)
        hold = load_buy_hold(data_url, symbol, curve[0])
        holds.append(None if hold is None else (curve[0], hold))
    both = None if any(h is None for h in holds) else equal_weight(holds)
    return equal_weight(curves), both


def in_sample_figures(plan: RunPlan, folder: Location, rows: pd.DataFrame) -> dict[str, float | None]:
    """Each ranked pair's in-sample `rank_by` figure, as the selection rule says (module docstring)."""
    if not plan.walk_forward:
        return {s: _figure(v) for s, v in zip(rows["symbol"], rows[plan.rank_by], strict=True)}
    figures = {}
    for symbol in rows["symbol"]:
        folds = ((read_json(folder, result_file(symbol)) or {}).get("walk_forward") or {}).get("folds") or []
        figures[symbol] = _figure(folds[0]["in_sample"].get(plan.rank_by)) if folds else None
    return figures


def label_portfolio(plan: RunPlan, label: str, rows: pd.DataFrame, data_url: str | None) -> tuple[dict, dict]:
    """One label's curves ({curve: Curve}) and its summary (pairs, metrics, the selection)."""
    folder = resolve(layout.strategy_results_url(plan.results_url, label))
    symbols = sorted(rows["symbol"])
    found: dict[str, Curve] = {}
    found["portfolio"], found["buy_hold"] = _pair_curves(folder, symbols, equity_file, data_url)
    window = "stitched out of sample" if plan.walk_forward else "in sample" if plan.holdout_days else "whole window"
    summary: dict = {"pairs": len(symbols), "window": window}
    if plan.holdout_days or plan.walk_forward:
        figures = in_sample_figures(plan, folder, rows)
        chosen = select(figures, plan.rank_by, plan.portfolio_top)
        name = equity_file if plan.walk_forward else oos_equity_file
        found["selected"], found["selected_buy_hold"] = _pair_curves(folder, chosen, name, data_url)
        figure = "walk_forward.folds[0].in_sample" if plan.walk_forward else "in-sample (top level)"
        summary["selection"] = {
            "by": plan.rank_by,
            "on": figure,
            "top": plan.portfolio_top,
            "symbols": chosen,
            "in_sample": {s: figures[s] for s in chosen},
        }
    curves = {k: v for k, v in found.items() if v is not None}
    summary["metrics"] = {k: curve_metrics(v[1]) for k, v in curves.items()}
    return curves, summary


def to_table(curves: dict[str, dict[str, Curve]]) -> pa.Table:
    """{label: {curve: (times, equity)}} as portfolio.parquet's long table (SCHEMA)."""
    columns: dict[str, list] = {name: [] for name in SCHEMA.names}
    for label, found in curves.items():
        for curve in CURVES:
            if curve not in found:
                continue
            times, equity = found[curve]
            columns["label"] += [label] * len(times)
            columns["curve"] += [curve] * len(times)
            columns["open_time"].append(times.astype("datetime64[ms]").astype(np.int64))
            columns["equity"].append(equity)
    arrays = [
        pa.array(columns["label"], pa.string()),
        pa.array(columns["curve"], pa.string()),
        pa.array(np.concatenate(columns["open_time"] or [np.zeros(0, np.int64)]), SCHEMA.field("open_time").type),
        pa.array(np.concatenate(columns["equity"] or [np.zeros(0)]), pa.float64()),
    ]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def write(plan: RunPlan, table: pd.DataFrame, data_url: str | None) -> tuple[str, dict]:
    """Build every label's portfolio from the leaderboard `table`, write portfolio.parquet (atomic;
    empty when nothing is ranked) and add the summaries to summary.json; (its URL, {label: summary})."""
    ranked = table[(table["status"] == "ok") & table["rank"].notna()]
    curves, summaries = {}, {}
    for label in dict.fromkeys(layout.label_of(item) for item in plan.strategies):
        rows = ranked[ranked["strategy"] == label]
        if len(rows):
            curves[label], summaries[label] = label_portfolio(plan, label, rows, data_url)
    folder = resolve(plan.results_url)
    sink = pa.BufferOutputStream()
    pq.write_table(to_table(curves), sink, compression="snappy")
    loc = folder.join(layout.PORTFOLIO_PARQUET)
    write_bytes_atomic(loc, sink.getvalue().to_pybytes())
    summary = read_json(folder, layout.SUMMARY_JSON) or {}
    summary["portfolio"] = summaries
    write_bytes_atomic(folder.join(layout.SUMMARY_JSON), json.dumps(summary, indent=1).encode())
    return loc.url, summaries


def read(results_url: str) -> dict[str, dict[str, Curve]] | None:
    """portfolio.parquet as {label: {curve: (times, equity)}}, or None when the run has none."""
    data = read_bytes(resolve(results_url).join(layout.PORTFOLIO_PARQUET))
    if data is None:
        return None
    frame = pq.read_table(io.BytesIO(data)).to_pandas()
    found: dict[str, dict[str, Curve]] = {}
    for (label, curve), part in frame.groupby(["label", "curve"], sort=False):
        times = part["open_time"].dt.tz_convert(None).to_numpy().astype("datetime64[ms]")
        found.setdefault(label, {})[curve] = (times, part["equity"].to_numpy())
    return found


def section(results_url: str) -> list[dict] | None:
    """The report's portfolio section: per label its chart and metrics table (the metrics computed
    again from the stored curves, the selection's symbols from summary.json); None without a file."""
    from backtest_airflow.report.charts.portfolio import portfolio_chart

    curves = read(results_url)
    if not curves:
        return None
    stored = (read_json(resolve(results_url), layout.SUMMARY_JSON) or {}).get("portfolio") or {}
    items = []
    for label, found in curves.items():
        rows = []
        for curve in (c for c in CURVES if c in found):
            figures = curve_metrics(found[curve][1])
            cells = [(sort_value(figures[m]), format_value(m, figures[m])) for m in EQUITY_METRICS]
            rows.append({"curve": curve, "name": CURVE_NAMES[curve], "cells": cells})
        info = stored.get(label) or {}
        items.append(
            {
                "label": label,
                "pairs": info.get("pairs"),
                "selection": info.get("selection"),
                "window": info.get("window"),
                "svg": portfolio_chart(label, found, info.get("window")),
                "heads": [column_label(m) for m in EQUITY_METRICS],
                "rows": rows,
            }
        )
    return items
