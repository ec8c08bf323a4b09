"""One backtest job: load a pair's candles, run the strategy, compute metrics, store the result.

This is what `python -m backtest run` does in one AWS Batch job or one local process. The
result is one JSON object; with a results URL it is also written, beside the equity curve,
as `{results_url}/{symbol}.json` and `{symbol}.equity.parquet` (each atomically, the JSON last,
and nothing at all when the job fails).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from backtest.candles import Candles, find_gaps, read_candle_file, to_arrow
from backtest.engine import run_windows
from backtest.errors import DataError, InputError
from backtest.metrics import compute_metrics
from backtest.params import HOUR_MS, format_time_ms, validate_symbol
from backtest.storage import resolve, write_bytes_atomic
from backtest.store import CandleStore

log = logging.getLogger("backtest")

STRATEGY = "sma_trend"


@dataclass(frozen=True)
class RunSpec:
    """A validated request for one pair's backtest."""

    symbol: str
    window: str  # as the user wrote it, e.g. "15d"
    window_bars: int
    fee_bps: float
    start_ms: int | None = None
    end_ms: int | None = None
    data_url: str | None = None
    input_url: str | None = None


@dataclass(frozen=True)
class LoadedCandles:
    candles: Candles  # warm-up bars followed by the in-window bars
    first_bar: int  # index of the first in-window bar
    source: str  # binance, synthetic, file, or a comma-joined mix


def load_candles(spec: RunSpec) -> LoadedCandles:
    """Read the window's candles plus up to w-1 warm-up candles before it."""
    warmup = spec.window_bars - 1
    if spec.input_url:
        candles = read_candle_file(resolve(spec.input_url))
        lo = 0 if spec.start_ms is None else int(np.searchsorted(candles.open_time, spec.start_ms))
        hi = len(candles) if spec.end_ms is None else int(np.searchsorted(candles.open_time, spec.end_ms))
        first = max(0, lo - warmup)
        return LoadedCandles(candles.slice(first, hi), lo - first, "file")
    store = CandleStore(spec.data_url)
    stored = store.read(spec.symbol, spec.start_ms, spec.end_ms, warmup_bars=warmup)
    times = stored.candles.open_time
    first_bar = 0 if spec.start_ms is None else int(np.searchsorted(times, spec.start_ms))
    source = ",".join(sorted(stored.sources)) or "unknown"
    log.info("read %d candles of %s from months %s", len(times), spec.symbol, ", ".join(stored.months_read))
    return LoadedCandles(stored.candles, first_bar, source)


def backtest(spec: RunSpec) -> tuple[dict, pa.Table]:
    """Run one pair's backtest; returns the result object and its equity table."""
    validate_symbol(spec.symbol)
    if spec.start_ms is not None and spec.end_ms is not None and spec.start_ms >= spec.end_ms:
        raise InputError(
            f"empty window: start {format_time_ms(spec.start_ms)} is not before end {format_time_ms(spec.end_ms)}"
        )
    loaded = load_candles(spec)
    candles, first = loaded.candles, loaded.first_bar
    bars = len(candles) - first
    if bars <= 0:
        raise DataError(f"no candles for {spec.symbol} in the window {_window_text(spec)}")
    if len(candles) < spec.window_bars:
        raise DataError(
            f"{spec.symbol}: the {spec.window} window needs {spec.window_bars} candles up to the window's end, "
            f"only {len(candles)} are available"
        )
    (run,) = run_windows(candles.open, candles.close, first, [spec.window_bars], spec.fee_bps / 10_000)
    in_window = candles.slice(first, len(candles))
    metrics = compute_metrics(
        run.equity,
        run.position,
        in_window.open,
        in_window.close,
        spec.fee_bps / 10_000,
        gaps=sum(g.hours for g in find_gaps(in_window.open_time)),
    )
    result = {
        "symbol": spec.symbol,
        "strategy": STRATEGY,
        "params": {"window": spec.window, "window_bars": spec.window_bars, "fee_bps": spec.fee_bps},
        "start": format_time_ms(spec.start_ms if spec.start_ms is not None else int(in_window.open_time[0])),
        "end": format_time_ms(spec.end_ms if spec.end_ms is not None else int(in_window.open_time[-1]) + HOUR_MS),
        "first_bar": format_time_ms(int(in_window.open_time[0])),
        "last_bar": format_time_ms(int(in_window.open_time[-1])),
        "warmup_bars": first,
        "data_source": loaded.source,
        "synthetic": "synthetic" in loaded.source,
        **metrics,
    }
    equity = pa.table(
        {
            "open_time": to_arrow(in_window.open_time, pa.timestamp("ms", tz="UTC")),
            "equity": to_arrow(run.equity, pa.float64()),
            "position": to_arrow(run.position, pa.int8()),
        }
    )
    return result, equity


def write_result(results_url: str, result: dict, equity: pa.Table) -> None:
    """Store `{symbol}.equity.parquet`, then `{symbol}.json` (its presence means the run is whole)."""
    folder = resolve(results_url)
    symbol = result["symbol"]
    sink = pa.BufferOutputStream()
    pq.write_table(equity, sink, compression="snappy")
    write_bytes_atomic(folder.join(f"{symbol}.equity.parquet"), sink.getvalue().to_pybytes())
    write_bytes_atomic(folder.join(f"{symbol}.json"), (to_json(result) + "\n").encode())


def to_json(result: dict) -> str:
    """Strict JSON: NaN or inf would be a bug upstream, so refuse them rather than print them."""
    return json.dumps(result, allow_nan=False, separators=(", ", ": "))


def _window_text(spec: RunSpec) -> str:
    start = format_time_ms(spec.start_ms) if spec.start_ms is not None else "first candle"
    end = format_time_ms(spec.end_ms) if spec.end_ms is not None else "last candle"
    return f"[{start}, {end})"
