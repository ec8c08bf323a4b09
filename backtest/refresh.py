"""Incremental, idempotent refresh of one pair's hourly candles in the store.

Finds the newest stored candle, fetches only the closed candles after it with open time before
`until` (floored to the hour), validates them and merges them into the store. A second run, or
a backfill to an earlier `until`, finds nothing to fetch and writes nothing. A pair with no
candles starts at `since` (default: `history_days` before `until`); with `extend_history`, a
pair whose oldest stored candle is younger than that start also gets the older candles (a
backfill or a longer lookback needs history the store does not have yet). The refresh is all or
nothing: candles are written only once every page has been fetched and validated. Missing
hours that the source does not have (exchange outages) are reported as gaps, never invented.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from backtest import synthetic
from backtest.candles import Candles, find_gaps, validate
from backtest.errors import InputError
from backtest.params import HOUR_MS, floor_hour_ms, format_time_ms, validate_symbol
from backtest.store import CandleStore

log = logging.getLogger("backtest.refresh")

DAY_MS = 24 * HOUR_MS


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
) -> tuple[Candles, int]:
    """Closed candles with start <= open_time < until from a source; (candles, requests made)."""
    if source == synthetic.SOURCE_NAME:
        return synthetic.synthetic_candles(symbol, start_ms, until_ms), 0
    if source == "binance":
        from backtest import binance

        return binance.fetch_klines(symbol, start_ms, until_ms, api_url=api_url, now_ms=now_ms)
    raise InputError(f"unknown source {source!r}: use binance or synthetic")


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
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    # Only closed candles: one that opens at t closes at t + 1h, which must be <= until and <= now.
    until = floor_hour_ms(min(until_ms, now_ms))
    store = CandleStore(data_url)
    history_start = since_ms if since_ms is not None else until - history_days * DAY_MS
    with store.lock(symbol):
        last = store.last_open_time(symbol)
        start = history_start if last is None else last + HOUR_MS
        fetched, requests = (
            (Candles.empty(), 0) if start >= until else fetch(source, symbol, start, until, api_url, now_ms)
        )
        fetched = fetched.take((fetched.open_time >= start) & (fetched.open_time < until))
        validate(fetched, f"{source} candles for {symbol}")
        first = store.first_open_time(symbol) if last is not None and extend_history else None
        older = Candles.empty()
        if first is not None and history_start < first:
            older, more_requests = fetch(source, symbol, history_start, first, api_url, now_ms)
            older = older.take((older.open_time >= history_start) & (older.open_time < first))
            validate(older, f"{source} candles for {symbol}")
            requests += more_requests
        written = store.write(symbol, Candles.concat([older, fetched]), source)
    edges = fetched.open_time if last is None else [last, *fetched.open_time]
    older_edges = [*older.open_time, first] if len(older) else []
    gaps = [
        {"after": format_time_ms(g.after_ms), "missing_hours": g.hours}
        for part in (older_edges, edges)
        for g in find_gaps(np.asarray(part, dtype=np.int64))
    ]
    newest = int(fetched.open_time[-1]) if len(fetched) else last
    fetched = Candles.concat([older, fetched])
    log.info("%s: fetched %d candles in %d request(s), wrote %d", symbol, len(fetched), requests, written.new_candles)
    return RefreshSummary(
        symbol=symbol,
        source=source,
        synthetic=source == synthetic.SOURCE_NAME,
        until=format_time_ms(until),
        fetched=len(fetched),
        written=written.new_candles,
        first_open_time=format_time_ms(int(fetched.open_time[0])) if len(fetched) else None,
        last_open_time=format_time_ms(int(fetched.open_time[-1])) if len(fetched) else None,
        stored_last_open_time=format_time_ms(newest) if newest is not None else None,
        gaps=gaps,
        requests=requests,
        conflicts=written.conflicts,
    )


def summary_json(summary: RefreshSummary) -> str:
    return json.dumps(asdict(summary), separators=(", ", ": "))
