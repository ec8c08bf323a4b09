"""A shown pair's trades in the report: its `{symbol}.trades.parquet` as a table, and its trade statistics.

The trades file (written by the job, `backtest.simulation.trade_stats.trades_table`) holds the
chosen combination's trades: `sample` (`in_sample`: the trades of the stored equity curve
without a walk-forward; `out_of_sample`: a hold-out's or a walk-forward's stitched trades),
`entry_time`, `exit_time` (null while open), `side` (1 long, -1 short), `return` (null while
open), `bars` (bars held) and `exit_kind` (signal, stop, take_profit, ruin; null while open).
The statistics are the result's `trade_stats` (closed trades only), per sample.
"""

from __future__ import annotations

import pyarrow as pa

from backtest.data.storage import read_bytes, read_parquet_bytes, resolve
from backtest.params import format_time_ms
from backtest.result_files import trades_file
from backtest.simulation.trade_stats import TRADE_STAT_NAMES
from backtest_airflow.report.formatting import format_value, label, missing, sort_value

MAX_TRADES_SHOWN = 300  # a pair's trades table shows its last ones (all of them are in its trades file)
SAMPLE_TEXT = {"in_sample": "in sample", "out_of_sample": "out of sample"}
SIDE_TEXT = {1: "long", -1: "short"}


def load_trades(results_url: str, symbol: str) -> list[dict] | None:
    """A pair's trades (`{symbol}.trades.parquet`) as records, times in epoch ms; None without the file."""
    data = read_bytes(resolve(results_url).join(trades_file(symbol)))
    if not data:
        return None
    table = read_parquet_bytes(data)
    for name in ("entry_time", "exit_time"):
        table = table.set_column(table.schema.get_field_index(name), name, table.column(name).cast(pa.int64()))
    return table.to_pylist()


def trade_samples(result: dict) -> list[tuple[str, dict]]:
    """(what the figures are of, `trade_stats`) of a result: the window's, or with a hold-out the
    in-sample and out-of-sample parts', or a walk-forward's stitched test windows' only."""
    oos = result.get("oos")
    if result.get("walk_forward"):
        return [("out of sample (stitched)", (oos or {}).get("trade_stats") or {})]
    samples = [("in sample" if oos else "window", result.get("trade_stats") or {})]
    if oos:
        samples.append(("out of sample", oos.get("trade_stats") or {}))
    return samples


def trades_view(results_url: str, symbol: str, result: dict | None) -> dict | None:
    """A pair's folded trades section: its last MAX_TRADES_SHOWN trades (entry, exit, side, return,
    bars held, exit kind; the sample when the file holds two) and every trade statistic per sample
    (`trade_samples`). None when the pair has neither a trades file nor statistics."""
    records = load_trades(results_url, symbol)
    samples = trade_samples(result) if result else []
    if records is None and not any(stats for _, stats in samples):
        return None
    records = records or []
    rows = []
    for number, record in enumerate(records, start=1):
        ret, kind = record["return"], record["exit_kind"]
        rows.append(
            {
                "number": number,
                "sample": SAMPLE_TEXT.get(record["sample"], record["sample"]),
                "entry": format_time_ms(record["entry_time"]),
                "exit": "open" if record["exit_time"] is None else format_time_ms(record["exit_time"]),
                "side": SIDE_TEXT.get(record["side"], str(record["side"])),
                "return": {"sort": sort_value(ret), "text": format_value("total_return", ret) or "open"},
                "css": "" if missing(ret) else "pos" if ret > 0 else "neg" if ret < 0 else "",
                "bars": record["bars"],
                "kind": (kind or "").replace("_", " "),
            }
        )
    stats = [
        {"name": name, "label": label(name), "cells": [_stat_cell(name, figures.get(name)) for _, figures in samples]}
        for name in TRADE_STAT_NAMES
    ]
    return {
        "rows": rows[-MAX_TRADES_SHOWN:],
        "total": len(rows),
        "open": sum(row["exit"] == "open" for row in rows),
        "two_samples": len({row["sample"] for row in rows}) > 1,
        "samples": [name for name, _ in samples],
        "stats": stats,
        "file": trades_file(symbol),
    }


def _stat_cell(name: str, value) -> dict:
    return {"sort": sort_value(value), "text": format_value(name, value)}
