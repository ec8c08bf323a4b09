"""Incremental, idempotent refresh of one pair's hourly candles in the store.

The pair's record (`backtest.data.store.PairRecord`) says which open-time ranges were already fetched
from its source. A refresh wants `[start, until)`, `until` floored to the hour (closed candles
only), and fetches only the parts of it that are not covered yet, oldest first:

- `start` is the oldest covered hour, so the range grows forward from the stored history; a new
  pair starts at `since` (default: `history_days` before `until`); with `extend_history` (the
  DAG's refresh, and the CLI's `--since`) it reaches back to that start on a stored pair too.
- Every missing range is fetched and validated before anything is written (a failed fetch
  writes nothing). Then the month files are written oldest first, each followed by the record
  with the ranges it completes, so a refresh killed or cut off at any point is resumed by the
  next one over the same range: it ends with exactly the candles one uninterrupted refresh
  would have stored (the same bytes) and does not ask again for what was recorded.
- Hours the source does not have (exchange outages) are covered but never invented: they stay
  gaps, reported in the summary, and are not asked for again.
- One source per pair: a refresh with another source fails (exit 3) before fetching anything.
- The history reaches back at most `MAX_HISTORY_DAYS` (100 years) and never before 1970-01-01, the
  store's earliest month (`backtest.data.store`): an earlier `since`, or more `history_days`, is
  invalid (exit 2) before anything is fetched.

The per-pair lock is held throughout; before each write the refresh checks that its lease still
holds (on S3 a holder cut off long enough loses it), so two refreshes never interleave writes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from backtest.data import synthetic
from backtest.data.candles import Candles, find_gaps, validate
from backtest.data.store import (
    CandleStore,
    PairRecord,
    merge_ranges,
    missing_ranges,
    month_of,
    month_start_ms,
    next_month_start_ms,
)
from backtest.errors import InputError
from backtest.params import DAY_MS, HOUR_MS, floor_hour_ms, format_time_ms, validate_symbol

log = logging.getLogger("backtest.data.refresh")

SOURCES = ("binance", synthetic.SOURCE_NAME)
MAX_HISTORY_DAYS = 36_500  # a hundred years: more than any exchange has
EARLIEST_MS = 0  # 1970-01-01T00:00:00Z: the store keeps months from 1970 on


@dataclass(frozen=True)
class RefreshSummary:
    symbol: str
    source: str
    synthetic: bool
    until: str
    fetched: int
    written: int
    first_open_time: str | None
    last_open_time: str | None
    stored_last_open_time: str | None
    gaps: list[dict]
    requests: int
    conflicts: int


def fetch(
    source: str, symbol: str, start_ms: int, until_ms: int, api_url: str | None, now_ms: int
) -> tuple[Candles, int, int]:
    """Closed candles with start <= open_time < until from a source.

    Returns (candles, requests made, covered until): every candle the source has with an open
    time in [start, covered until) is in `candles` (covered until <= until).
    """
    if source == synthetic.SOURCE_NAME:
        return synthetic.synthetic_candles(symbol, start_ms, until_ms), 0, until_ms
    if source == "binance":
        from backtest.data import binance

        return binance.fetch_klines(symbol, start_ms, until_ms, api_url=api_url, now_ms=now_ms)
    raise InputError(f"unknown source {source!r}: use {' or '.join(SOURCES)}")


def refresh_pair(
    symbol: str,
    data_url: str,
    until_ms: int,
    since_ms: int | None = None,
    history_days: int = 730,
    source: str = "binance",
    api_url: str | None = None,
    now_ms: int | None = None,
    extend_history: bool = False,
) -> RefreshSummary:
    """Bring `symbol` up to `until` in the store at `data_url`; see the module docstring."""
    validate_symbol(symbol)
    if source not in SOURCES:
        raise InputError(f"unknown source {source!r}: use {' or '.join(SOURCES)}")
    if since_ms is not None and since_ms >= until_ms:
        raise InputError(f"--since {format_time_ms(since_ms)} is not before --until {format_time_ms(until_ms)}")
    if not 1 <= history_days <= MAX_HISTORY_DAYS:
        raise InputError(f"invalid --history-days {history_days}: must be from 1 to {MAX_HISTORY_DAYS} (100 years)")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    # Only closed candles: one that opens at t closes at t + 1h, which must be <= until and <= now.
    until = floor_hour_ms(min(until_ms, now_ms))
    wanted_start = since_ms if since_ms is not None else until - history_days * DAY_MS
    if wanted_start < EARLIEST_MS:
        earliest = format_time_ms(EARLIEST_MS)
        if until <= EARLIEST_MS:
            raise InputError(f"--until {format_time_ms(until_ms)} is not after {earliest}, the store's earliest time")
        if since_ms is not None:
            raise InputError(f"--since {format_time_ms(since_ms)} is before {earliest}, the store's earliest time")
        raise InputError(
            f"--history-days {history_days} reaches back before {earliest}, the store's earliest time: at most "
            f"{(until - EARLIEST_MS) // DAY_MS} days before {format_time_ms(until)}"
        )
    wanted_start = -(-wanted_start // HOUR_MS) * HOUR_MS  # the first whole hour at or after it
    store = CandleStore(data_url)
    with store.lock(symbol) as lease:
        record = store.check_source(symbol, source)
        covered = record.covered if record is not None else ()
        start = wanted_start
        if covered:
            start = min(wanted_start, covered[0][0]) if extend_history else covered[0][0]
        first, last = store.first_open_time(symbol), store.last_open_time(symbol)
        pieces, requests = [], 0
        for a, b in missing_ranges(start, until, covered):
            candles, made, done_until = fetch(source, symbol, a, b, api_url, now_ms)
            candles = candles.take((candles.open_time >= a) & (candles.open_time < done_until))
            validate(candles, f"{source} candles for {symbol}")
            pieces.append((a, done_until, candles))
            requests += made
        fetched = Candles.concat([p[2] for p in pieces])
        written, conflicts = _write(store, lease, symbol, source, covered, pieces, fetched)
    gaps = [
        {"after": format_time_ms(g.after_ms), "missing_hours": g.hours}
        for a, e, candles in pieces
        for g in find_gaps(_with_neighbours(candles.open_time, a, e, first, last))
    ]
    newest = max(filter(None, [last, int(fetched.open_time[-1]) if len(fetched) else None]), default=None)
    log.info("%s: fetched %d candles in %d request(s), wrote %d", symbol, len(fetched), requests, written)
    return RefreshSummary(
        symbol=symbol,
        source=source,
        synthetic=source == synthetic.SOURCE_NAME,
        until=format_time_ms(until),
        fetched=len(fetched),
        written=written,
        first_open_time=format_time_ms(int(fetched.open_time[0])) if len(fetched) else None,
        last_open_time=format_time_ms(int(fetched.open_time[-1])) if len(fetched) else None,
        stored_last_open_time=format_time_ms(newest) if newest is not None else None,
        gaps=gaps,
        requests=requests,
        conflicts=conflicts,
    )


def _write(store: CandleStore, lease, symbol: str, source: str, covered, pieces, fetched: Candles) -> tuple[int, int]:
    """Write the month files oldest first, each followed by the record with the ranges it completes."""
    done = [(a, e) for a, e, _ in pieces if e > a]
    if not done:
        return 0, 0
    first_month, last_month = month_of(np.array([done[0][0], done[-1][1] - 1], dtype=np.int64))
    labels = month_of(fetched.open_time)
    written = conflicts = 0
    for month in np.arange(np.datetime64(first_month, "M"), np.datetime64(last_month, "M") + 1):
        month = str(month)
        month_start, month_end = month_start_ms(month), next_month_start_ms(month)
        lease.ensure_held()
        summary = store.write(symbol, fetched.take(labels == month), source)
        written, conflicts = written + summary.new_candles, conflicts + summary.conflicts
        now_covered = merge_ranges(
            [
                *covered,
                *((max(a, month_start), min(e, month_end)) for a, e in done if a < month_end and e > month_start),
            ]
        )
        if now_covered != covered:
            lease.ensure_held()
            store.write_record(PairRecord(symbol, source, now_covered))
            covered = now_covered
    return written, conflicts


def _with_neighbours(times: np.ndarray, start: int, end: int, first: int | None, last: int | None) -> np.ndarray:
    """A fetched range's open times with the stored candles just outside it (for the gaps at its edges)."""
    before = [last] if last is not None and last < start else []
    after = [first] if first is not None and first >= end and len(times) else []
    return np.asarray([*before, *times, *after], dtype=np.int64)


def summary_json(summary: RefreshSummary) -> str:
    return json.dumps(asdict(summary), separators=(", ", ": "))
