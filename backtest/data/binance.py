"""Binance spot klines (hourly candles) over HTTP: paged, retried, polite to the rate limit, validated.

`fetch_klines` asks `GET {base}/api/v3/klines?symbol=...&interval=1h&startTime=...&endTime=...&limit=1000`
page by page (the next page starts one hour after the last open time it got) and returns only
closed candles: open time before `until` and close time before now, where now is the earlier of
our clock and the server's `Date` header (an exchange serves the current, still-moving candle too).

Transport faults are retried by urllib3's `Retry` (mounted on a requests session), not by a loop
of our own: connection and read errors and 5xx answers with exponential backoff plus jitter, 429
and 418 after the server's `Retry-After` (418 added to the statuses that honour it), all within a
bounded number of attempts. A `Retry-After` longer than `MAX_RETRY_AFTER` (an IP ban) is not
slept through. HTTP 400 (an unknown symbol) and other 4xx fail at once. Every failure is a
`DataError` naming the pair, and nothing is returned unless every page arrived and passed the
checks, so a refresh is all or nothing.

Each response's `X-MBX-USED-WEIGHT-1m` is read; a klines request weighs `KLINES_WEIGHT` of the
`WEIGHT_LIMIT_1M` per minute, and when the used weight comes within `WEIGHT_SAFETY_MARGIN` of it
the next request waits for the next minute window.

A response that stalls after its headers (mid-body) is not retried by urllib3 when read through
requests (requests reads the body after urllib3's retry loop); it fails as a DataError and the
next refresh picks up where the store ends.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader, MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from backtest.data.candles import Candles, validate
from backtest.errors import DataError, SourceUnavailable
from backtest.params import HOUR_MS, format_time_ms, validate_symbol

log = logging.getLogger("backtest.data.binance")

DEFAULT_API_URL = "https://api.binance.com"
API_URL_ENV = "BINANCE_API_URL"
KLINES_PATH = "/api/v3/klines"
INTERVAL = "1h"
PAGE_LIMIT = 1000  # the most klines Binance returns per request

# Rate limit (REQUEST_WEIGHT per IP per minute).
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1m"
KLINES_WEIGHT = 2
WEIGHT_LIMIT_1M = 6000
WEIGHT_SAFETY_MARGIN = 600  # stop at 90% of the limit and wait for the next minute

RETRY_STATUSES = frozenset({429, *range(500, 600)})

_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?")


@dataclass(frozen=True)
class RetryPolicy:
    """How the client waits and retries: one value, so that callers and tests tighten it in one place."""

    max_attempts: int = 5  # first try plus retries, across all kinds of fault
    backoff_factor: float = 0.5  # waits 0, 1, 2, 4 s ... (urllib3: factor * 2 ** (n - 1) from the 2nd retry)
    backoff_max: float = 30.0
    backoff_jitter: float = 0.5  # plus up to this many seconds, uniformly
    max_retry_after: float = 120.0  # a longer Retry-After (a 418 ban) fails instead of waiting
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    sleep: Callable[[float], object] = time.sleep  # every wait: retries and rate-limit pauses

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")


RETRY_POLICY = RetryPolicy()  # what fetch_klines uses unless given another


class KlinesRetry(Retry):
    """urllib3 Retry that honours Retry-After on 418 too, sleeps through an injectable function
    (so tests can record waits instead of waiting) and refuses to wait more than `max_retry_after`."""

    RETRY_AFTER_STATUS_CODES = frozenset({*Retry.RETRY_AFTER_STATUS_CODES, 418, 429})

    sleep_fn: Callable[[float], object] = staticmethod(time.sleep)
    max_retry_after: float = RetryPolicy.max_retry_after

    def new(self, **kw) -> KlinesRetry:
        retry = super().new(**kw)
        retry.sleep_fn = self.sleep_fn
        retry.max_retry_after = self.max_retry_after
        return retry

    def get_retry_after(self, response) -> float | None:
        try:
            return super().get_retry_after(response)
        except InvalidHeader:
            return None  # unparseable: back off instead

    def increment(self, method=None, url=None, *args, response=None, **kwargs) -> KlinesRetry:
        # Only the public arguments are read; urllib3's private ones pass through untouched.
        if response is not None and response.status in self.RETRY_AFTER_STATUS_CODES:
            wait = self.get_retry_after(response)
            if wait is not None and wait > self.max_retry_after:
                # Give up now; with raise_on_status=False the caller gets this response to report.
                raise MaxRetryError(kwargs.get("_pool"), url, ResponseError(f"Retry-After {wait:.0f}s is too long"))
        return super().increment(method, url, *args, response=response, **kwargs)

    def sleep_for_retry(self, response) -> bool:
        wait = self.get_retry_after(response)
        if wait:
            self.sleep_fn(wait)
            return True
        return False

    def sleep(self, response=None) -> None:
        if self.respect_retry_after_header and response is not None and self.sleep_for_retry(response):
            return
        backoff = self.get_backoff_time()
        if backoff > 0:
            self.sleep_fn(backoff)


def make_session(policy: RetryPolicy) -> requests.Session:
    """A requests session whose adapter retries as the policy says (see the module docstring)."""
    retry = KlinesRetry(
        total=policy.max_attempts - 1,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        backoff_factor=policy.backoff_factor,
        backoff_max=policy.backoff_max,
        backoff_jitter=policy.backoff_jitter,
        raise_on_status=False,  # the last answer comes back, so that we can say what it was
        respect_retry_after_header=True,
    )
    retry.sleep_fn = policy.sleep
    retry.max_retry_after = policy.max_retry_after
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "crypto-backtest-refresh/0.1"
    return session


def api_base_url(api_url: str | None = None) -> str:
    """The API base URL: the argument, else $BINANCE_API_URL, else the public API."""
    return (api_url or os.environ.get(API_URL_ENV) or DEFAULT_API_URL).rstrip("/")


def fetch_klines(
    symbol: str,
    start_ms: int,
    until_ms: int,
    api_url: str | None = None,
    now_ms: int | None = None,
    *,
    policy: RetryPolicy | None = None,
    session: requests.Session | None = None,
) -> tuple[Candles, int, int]:
    """Closed hourly candles with start <= open_time < until: (candles, HTTP requests made, covered until).

    Every candle Binance has with an open time in [start, covered until) was served and closed
    (`covered until` is `until`, or earlier when the exchange's clock says later candles are not
    closed yet). The request count includes retried attempts. `policy` (default `RETRY_POLICY`)
    sets timeouts, retries and waits; with `session` given, that session's own retries apply.
    """
    validate_symbol(symbol)
    base = api_base_url(api_url)
    url = base + KLINES_PATH
    now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    policy = RETRY_POLICY if policy is None else policy
    timeout = (policy.connect_timeout, policy.read_timeout)
    attempts_allowed = policy.max_attempts
    what = f"Binance klines for {symbol}"
    own_session = session is None
    if session is None:
        session = make_session(policy)
    pages: list[_Page] = []
    requests_made = 0
    used_weight: int | None = None
    start = int(start_ms)
    try:
        while start < until_ms:
            if used_weight is not None and used_weight + KLINES_WEIGHT > WEIGHT_LIMIT_1M - WEIGHT_SAFETY_MARGIN:
                wait = 61.0 - time.time() % 60.0  # into the next minute window, with a second to spare
                log.info(
                    "%s: used weight %d of %d per minute, waiting %.1fs", symbol, used_weight, WEIGHT_LIMIT_1M, wait
                )
                policy.sleep(wait)
            params = {
                "symbol": symbol,
                "interval": INTERVAL,
                "startTime": start,
                "endTime": until_ms - 1,
                "limit": PAGE_LIMIT,
            }
            response = _get(session, url, params, timeout, what, attempts_allowed)
            attempts = _attempts(response)
            requests_made += attempts
            _check_status(response, what, symbol, attempts)
            used_weight = _used_weight(response)
            page = _parse_page(response.content, what)
            if len(page.open_time) and page.open_time[0] < start:
                raise DataError(f"{what}: the server sent klines from before startTime {format_time_ms(start)}")
            validate(page.candles(), what)  # OHLC and the rest, before asking for more
            server_now = _server_time_ms(response)
            page.closed_before = now_ms if server_now is None else min(now_ms, server_now)
            pages.append(page)
            if len(page.open_time) == 0:
                break
            last_open = int(page.open_time[-1])
            start = last_open + HOUR_MS
            if len(page.open_time) < PAGE_LIMIT or page.close_time[-1] >= page.closed_before:
                break
    finally:
        if own_session:
            session.close()
    candles = _assemble(pages, start_ms, until_ms, what)
    covered_until = min(until_ms, pages[-1].closed_before - pages[-1].closed_before % HOUR_MS) if pages else until_ms
    log.debug("%s: %d closed candles in %d request(s)", symbol, len(candles), requests_made)
    return candles, requests_made, max(int(start_ms), covered_until)


# -- HTTP -----------------------------------------------------------------------------------


def _get(session: requests.Session, url: str, params: dict, timeout, what: str, attempts: int) -> requests.Response:
    try:
        return session.get(url, params=params, timeout=timeout)
    except requests.RequestException as exc:
        cause: object = exc.args[0] if exc.args and isinstance(exc.args[0], Exception) else exc
        if isinstance(cause, MaxRetryError) and cause.reason is not None:
            cause = cause.reason
        reason = type(cause).__name__
        raise SourceUnavailable(
            f"{what}: no usable answer from {url} ({reason}; {attempts} attempt(s) allowed)"
        ) from None
    except InvalidHeader as exc:  # urllib3 errors requests does not wrap
        raise DataError(f"{what}: bad response from {url} ({exc})") from None


def _attempts(response: requests.Response) -> int:
    """HTTP requests behind this response: 1 plus the attempts urllib3 retried."""
    retries = getattr(response.raw, "retries", None)
    history = getattr(retries, "history", None) or ()
    return 1 + len(history)


def _check_status(response: requests.Response, what: str, symbol: str, attempts: int) -> None:
    status = response.status_code
    if status == 200:
        return
    code, msg = _binance_error(response)
    detail = f"HTTP {status}" + (f", code {code}" if code is not None else "")
    said = f": {msg}" if msg else ""
    if status == 400 and code == -1121:
        raise DataError(f"Binance does not know the symbol {symbol}{said} ({detail})")
    if status in (418, 429):
        retry_after = response.headers.get("Retry-After")
        wait = f", Retry-After {retry_after}s" if retry_after else ""
        raise SourceUnavailable(
            f"{what}: rate limited by Binance ({detail}{wait}) after {attempts} attempt(s); try again later"
        )
    if status >= 500:
        raise SourceUnavailable(f"{what}: Binance failed ({detail}) after {attempts} attempt(s){said}")
    raise DataError(f"{what}: Binance refused the request ({detail}){said}")


def _binance_error(response: requests.Response) -> tuple[int | None, str]:
    """Binance's `{"code": -1121, "msg": "Invalid symbol."}`, or (None, a short body excerpt)."""
    try:
        body = json.loads(response.content)
    except ValueError:
        text = response.content[:120].decode("utf-8", "replace")
        return None, " ".join(text.split())
    if isinstance(body, dict):
        code = body.get("code")
        return (code if isinstance(code, int) else None), " ".join(str(body.get("msg", "")).split())[:200]
    return None, ""


def _used_weight(response: requests.Response) -> int | None:
    value = response.headers.get(WEIGHT_HEADER)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _server_time_ms(response: requests.Response) -> int | None:
    """The server's clock from its Date header (second resolution), if it sent a valid one."""
    value = response.headers.get("Date")
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp() * 1000)


# -- payload --------------------------------------------------------------------------------


class _Page:
    __slots__ = ("close", "close_time", "closed_before", "high", "low", "open", "open_time", "volume")

    def __init__(self, rows: int):
        self.open_time = np.empty(rows, np.int64)
        self.close_time = np.empty(rows, np.int64)
        self.open = np.empty(rows, np.float64)
        self.high = np.empty(rows, np.float64)
        self.low = np.empty(rows, np.float64)
        self.close = np.empty(rows, np.float64)
        self.volume = np.empty(rows, np.float64)
        self.closed_before = 0

    def candles(self) -> Candles:
        return Candles(self.open_time, self.open, self.high, self.low, self.close, self.volume)


def _parse_page(body: bytes, what: str) -> _Page:
    """Strictly parse one klines response body; any deviation is a DataError."""
    try:
        data = json.loads(body)
    except ValueError:
        excerpt = " ".join(body[:60].decode("utf-8", "replace").split())
        raise DataError(f"{what}: response is not JSON ({excerpt!r})") from None
    if not isinstance(data, list):
        raise DataError(f"{what}: expected a JSON array of klines, got a JSON {type(data).__name__}")
    page = _Page(len(data))
    columns = (page.open, page.high, page.low, page.close, page.volume)
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) < 7:
            raise DataError(f"{what}: kline {i} is not an array of at least 7 items")
        page.open_time[i] = _integer(row[0], what, i, "open time")
        page.close_time[i] = _integer(row[6], what, i, "close time")
        for column, k, name in zip(columns, range(1, 6), ("open", "high", "low", "close", "volume"), strict=True):
            column[i] = _number(row[k], what, i, name)
    if (np.diff(page.open_time) <= 0).any():
        raise DataError(
            f"{what}: klines out of order or duplicated at kline {int(np.argmax(np.diff(page.open_time) <= 0)) + 1}"
        )
    off_hour = page.open_time % HOUR_MS != 0
    if off_hour.any():
        raise DataError(f"{what}: kline {int(np.argmax(off_hour))} does not open on the hour")
    bad_close = page.close_time != page.open_time + HOUR_MS - 1
    if bad_close.any():
        raise DataError(
            f"{what}: kline {int(np.argmax(bad_close))} is not a 1h kline (close time != open time + 1h - 1ms)"
        )
    return page


def _integer(value: object, what: str, row: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{what}: kline {row} has a non-integer {name} {value!r:.40}")
    return value


def _number(value: object, what: str, row: int, name: str) -> float:
    is_text = isinstance(value, str) and _NUMBER.fullmatch(value) is not None
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if is_text or is_number:
        number = float(value)  # type: ignore[arg-type]
    else:
        raise DataError(f"{what}: kline {row} has a non-numeric {name} {value!r:.40}")
    if not math.isfinite(number):
        raise DataError(f"{what}: kline {row} has a non-finite {name} {value!r:.40}")
    return number


def _assemble(pages: list[_Page], start_ms: int, until_ms: int, what: str) -> Candles:
    """Join the pages, check the whole series, and keep the closed candles in [start, until)."""
    if not pages:
        return Candles.empty()
    received = Candles.concat([p.candles() for p in pages])
    validate(received, what)  # across pages too: order, no duplicates
    close_time = np.concatenate([p.close_time for p in pages])
    closed_before = np.concatenate([np.full(len(p.open_time), p.closed_before, np.int64) for p in pages])
    keep = (received.open_time >= start_ms) & (received.open_time < until_ms) & (close_time < closed_before)
    return received.take(keep)
