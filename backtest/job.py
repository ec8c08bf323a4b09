"""One backtest job: load a pair's candles, run the strategy, compute metrics, store the result.

This is what `python -m backtest run` does in one AWS Batch job or one local process, for one
pair or a chunk of pairs. Each pair's result is one JSON object; with a results URL it is also
written, beside the best window's equity curve, as `{results_url}/{symbol}.json` and
`{symbol}.equity.parquet` (each atomically, the JSON last, and nothing when the pair fails).

Several windows are evaluated in one pass over the candles (a sweep). With a hold-out, the
window is split at `end - holdout_days`: every window is backtested on the in-sample part and,
separately, on the out-of-sample part (starting flat, warmed up by the bars before it); the best
window is chosen on the in-sample figures only, and its out-of-sample figures are reported
beside them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from backtest.candles import Candles, find_gaps, read_candle_file, to_arrow
from backtest.engine import WindowRun, run_windows
from backtest.errors import DataError, InputError
from backtest.metrics import compute_metrics
from backtest.params import DAY_MS, HOUR_MS, floor_hour_ms, format_time_ms, validate_symbol
from backtest.storage import resolve, write_bytes_atomic
from backtest.store import CandleStore

log = logging.getLogger("backtest")

JOBS_DIR = "_jobs"  # {results_url}/_jobs/{job}.json: each job's wall time and size (its cost)

STRATEGY = "sma_trend"
SELECT_METRICS = ("total_return", "sharpe", "sortino", "calmar", "cagr", "max_drawdown", "win_rate")
LOWER_IS_BETTER = ("max_drawdown",)


@dataclass(frozen=True)
class RunSpec:
    """A validated request for one pair's backtest."""

    symbol: str
    window: str  # as the user wrote it, e.g. "15d" or "5d,10d,15d"
    windows: tuple[tuple[str, int], ...]  # (label, bars) for every window in the sweep
    fee_bps: float
    start_ms: int | None = None
    end_ms: int | None = None
    data_url: str | None = None
    input_url: str | None = None
    holdout_days: int = 0
    select_by: str = "total_return"

    @property
    def max_window_bars(self) -> int:
        return max(bars for _, bars in self.windows)

    @property
    def is_sweep(self) -> bool:
        return len(self.windows) > 1 or self.holdout_days > 0


@dataclass(frozen=True)
class LoadedCandles:
    candles: Candles  # warm-up bars followed by the in-window bars
    first_bar: int  # index of the first in-window bar
    source: str  # binance, synthetic, file, or a comma-joined mix


def load_candles(spec: RunSpec) -> LoadedCandles:
    """Read the window's candles plus up to w-1 warm-up candles before it (w: the longest window)."""
    warmup = spec.max_window_bars - 1
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


def _segment_metrics(candles: Candles, first: int, stop: int, runs: list[WindowRun], fee: float) -> list[dict]:
    """Metrics of each window's run over bars [first, stop) of `candles`."""
    part = candles.slice(first, stop)
    gaps = sum(g.hours for g in find_gaps(part.open_time))
    return [compute_metrics(run.equity, run.position, part.open, part.close, fee, gaps=gaps) for run in runs]


def _best_index(metrics: list[dict], select_by: str) -> int:
    """The window with the best `select_by` (undefined values lose; ties go to the first)."""
    sign = -1.0 if select_by in LOWER_IS_BETTER else 1.0
    scores = [sign * m[select_by] if m[select_by] is not None else -math.inf for m in metrics]
    return int(np.argmax(scores))


def backtest(spec: RunSpec) -> tuple[dict, pa.Table]:
    """Run one pair's backtest (or sweep); returns the result object and the best window's equity.

    Only candles closed by `end` count: one that opens at t closes at t + 1h, so `end` is floored
    to the hour (as the refresh floors `until`).
    """
    validate_symbol(spec.symbol)
    if spec.end_ms is not None:
        spec = dataclasses.replace(spec, end_ms=floor_hour_ms(spec.end_ms))
    if spec.select_by not in SELECT_METRICS:
        raise InputError(f"invalid --select-by {spec.select_by!r}: one of {', '.join(SELECT_METRICS)}")
    if spec.start_ms is not None and spec.end_ms is not None and spec.start_ms >= spec.end_ms:
        raise InputError(
            f"empty window: start {format_time_ms(spec.start_ms)} is not before end {format_time_ms(spec.end_ms)}"
        )
    loaded = load_candles(spec)
    candles, first = loaded.candles, loaded.first_bar
    if len(candles) - first <= 0:
        raise DataError(f"no candles for {spec.symbol} in the window {_window_text(spec)}")
    if len(candles) < spec.max_window_bars:
        label = next(label for label, bars in spec.windows if bars == spec.max_window_bars)
        raise DataError(
            f"{spec.symbol}: the {label} window needs {spec.max_window_bars} candles up to the window's end, "
            f"only {len(candles)} are available"
        )
    fee = spec.fee_bps / 10_000
    bars = [b for _, b in spec.windows]
    split = len(candles)
    if spec.holdout_days:
        end_ms = spec.end_ms if spec.end_ms is not None else int(candles.open_time[-1]) + HOUR_MS
        split = int(np.searchsorted(candles.open_time, end_ms - spec.holdout_days * DAY_MS))
        if split <= first or split >= len(candles):
            raise InputError(f"a {spec.holdout_days}-day hold-out leaves no in-sample or no out-of-sample bars")

    in_sample = run_windows(candles.open[:split], candles.close[:split], first, bars, fee)
    in_metrics = _segment_metrics(candles, first, split, in_sample, fee)
    best = _best_index(in_metrics, spec.select_by)
    oos_metrics: list[dict] = []
    if spec.holdout_days:
        oos_runs = run_windows(candles.open, candles.close, split, bars, fee)
        oos_metrics = _segment_metrics(candles, split, len(candles), oos_runs, fee)

    in_window = candles.slice(first, len(candles))
    result = {
        "symbol": spec.symbol,
        "strategy": STRATEGY,
        "params": _params(spec),
        "start": format_time_ms(spec.start_ms if spec.start_ms is not None else int(in_window.open_time[0])),
        "end": format_time_ms(spec.end_ms if spec.end_ms is not None else int(in_window.open_time[-1]) + HOUR_MS),
        "first_bar": format_time_ms(int(in_window.open_time[0])),
        "last_bar": format_time_ms(int(in_window.open_time[-1])),
        "warmup_bars": first,
        "data_source": loaded.source,
        "synthetic": "synthetic" in loaded.source,
        **in_metrics[best],
    }
    if spec.is_sweep:
        result["best_window"], result["best_window_bars"] = spec.windows[best]
        if spec.holdout_days:
            result["split"] = format_time_ms(int(candles.open_time[split]))
            result["oos"] = oos_metrics[best]
        result["sweep"] = [
            {"window": label, "window_bars": b, **in_metrics[i], **({"oos": oos_metrics[i]} if oos_metrics else {})}
            for i, (label, b) in enumerate(spec.windows)
        ]
    run = in_sample[best]
    equity = pa.table(
        {
            "open_time": to_arrow(candles.open_time[first:split], pa.timestamp("ms", tz="UTC")),
            "equity": to_arrow(run.equity, pa.float64()),
            "position": to_arrow(run.position, pa.int8()),
        }
    )
    return result, equity


def _params(spec: RunSpec) -> dict:
    if not spec.is_sweep:
        ((_, bars),) = spec.windows
        return {"window": spec.window, "window_bars": bars, "fee_bps": spec.fee_bps}
    return {
        "window": spec.window,
        "windows": [label for label, _ in spec.windows],
        "window_bars": [bars for _, bars in spec.windows],
        "fee_bps": spec.fee_bps,
        "holdout_days": spec.holdout_days,
        "select_by": spec.select_by,
    }


def write_result(results_url: str, result: dict, equity: pa.Table) -> None:
    """Store `{symbol}.equity.parquet`, then `{symbol}.json` (its presence means the run is whole)."""
    folder = resolve(results_url)
    symbol = result["symbol"]
    sink = pa.BufferOutputStream()
    pq.write_table(equity, sink, compression="snappy")
    write_bytes_atomic(folder.join(f"{symbol}.equity.parquet"), sink.getvalue().to_pybytes())
    write_bytes_atomic(folder.join(f"{symbol}.json"), (to_json(result) + "\n").encode())


def write_error(results_url: str, symbol: str, message: str, exit_code: int) -> None:
    """Record why one pair of a chunk failed, for the leaderboard (`{symbol}.error.json`)."""
    record = {"symbol": symbol, "error": message, "exit_code": exit_code}
    write_bytes_atomic(resolve(results_url).join(f"{symbol}.error.json"), (to_json(record) + "\n").encode())


def write_job_record(results_url: str, record: dict) -> None:
    """Record a job's wall time and size under `_jobs/` (the rank step sums them into a cost)."""
    write_bytes_atomic(resolve(results_url).join(JOBS_DIR, f"{record['job_name']}.json"), to_json(record).encode())


def to_json(result: dict) -> str:
    """Strict JSON: NaN or inf would be a bug upstream, so refuse them rather than print them."""
    return json.dumps(result, allow_nan=False, separators=(", ", ": "))


def _window_text(spec: RunSpec) -> str:
    start = format_time_ms(spec.start_ms) if spec.start_ms is not None else "first candle"
    end = format_time_ms(spec.end_ms) if spec.end_ms is not None else "last candle"
    return f"[{start}, {end})"
