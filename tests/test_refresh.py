"""Hourly candle refresh (issue #3): Binance klines into the store, incrementally and idempotently.

The exchange is tests/exchange.py: a real HTTP server on loopback speaking Binance's klines API,
with scripted faults. Waits of the client (Retry-After, backoff, rate-limit pauses) go through
an injected `sleep` that records them, so nothing here really waits for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from backtest.cli import main
from backtest.data import binance
from backtest.data.candles import Candles
from backtest.data.refresh import refresh_pair
from backtest.data.store import CandleStore
from backtest.errors import EXIT_DATA, EXIT_IO, BacktestError, DataError, InputError, SourceUnavailable
from backtest.params import HOUR_MS, parse_time_ms
from tests.exchange import Fault, kline_row
from tests.support import REPO, assert_same, backtest_process, file_bytes

SYMBOL = "BTCUSDT"
SINCE = parse_time_ms("2024-01-01")
UNTIL = parse_time_ms("2024-03-01")  # 60 days: 1,440 candles, 2 pages of at most 1,000
DAYS_60 = 60 * 24
READ_TIMEOUT = 1.0  # the client's read timeout in these tests (loaded CI machines need slack); faults exceed it


@pytest.fixture(autouse=True)
def sleeps(monkeypatch) -> list[float]:
    """Every wait of the Binance client, recorded instead of slept; short timeouts and backoff."""
    recorded: list[float] = []
    fast = binance.RetryPolicy(
        sleep=recorded.append, connect_timeout=2.0, read_timeout=READ_TIMEOUT, backoff_factor=0.01, backoff_jitter=0.01
    )
    monkeypatch.setattr(binance, "RETRY_POLICY", fast)
    monkeypatch.delenv(binance.API_URL_ENV, raising=False)
    return recorded


def stored(url: str, symbol: str = SYMBOL) -> Candles:
    return CandleStore(url).read(symbol).candles


def refresh(url: str, exchange, until: str | int = UNTIL, since: str | int | None = SINCE, **kwargs):
    until_ms = parse_time_ms(until) if isinstance(until, str) else until
    since_ms = parse_time_ms(since) if isinstance(since, str) else since
    return refresh_pair(SYMBOL, url, until_ms=until_ms, since_ms=since_ms, api_url=exchange.url, **kwargs)


# -- the happy path: cold, idempotent, incremental -------------------------------------------


def test_cold_refresh_stores_exactly_the_exchange_candles(store_url, exchange):
    summary = refresh(store_url, exchange)
    assert summary.fetched == summary.written == DAYS_60
    assert summary.requests == 2 == len(exchange.klines_requests())
    assert summary.gaps == [] and summary.conflicts == 0 and summary.synthetic is False
    assert (summary.first_open_time, summary.last_open_time) == ("2024-01-01T00:00:00Z", "2024-02-29T23:00:00Z")
    assert_same(stored(store_url), exchange.closed_candles(SYMBOL, SINCE, UNTIL))
    assert CandleStore(store_url).read(SYMBOL).sources == {"binance"}
    assert CandleStore(store_url).months(SYMBOL) == ["2024-01", "2024-02"]


def test_klines_requests_page_forward_like_the_api_expects(exchange):
    candles, requests_made, _ = binance.fetch_klines(SYMBOL, SINCE, UNTIL, api_url=exchange.url)
    assert len(candles) == DAYS_60 and requests_made == 2
    first, second = exchange.klines_requests()
    assert first == f"/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={SINCE}&endTime={UNTIL - 1}&limit=1000"
    assert f"startTime={SINCE + 1000 * HOUR_MS}&" in second


def test_api_url_comes_from_the_environment(exchange, monkeypatch):
    monkeypatch.setenv(binance.API_URL_ENV, exchange.url + "/")
    candles, requests_made, _ = binance.fetch_klines(SYMBOL, SINCE, SINCE + 24 * HOUR_MS)
    assert len(candles) == 24 and requests_made == 1
    assert binance.api_base_url() == exchange.url
    monkeypatch.delenv(binance.API_URL_ENV)
    assert binance.api_base_url() == "https://api.binance.com"


def test_second_run_and_backfill_write_nothing_and_ask_nothing(store_url, exchange):
    refresh(store_url, exchange)
    before = file_bytes(store_url, SYMBOL)
    exchange.reset_requests()

    again = refresh(store_url, exchange)
    assert (again.fetched, again.written, again.requests) == (0, 0, 0)
    assert again.stored_last_open_time == "2024-02-29T23:00:00Z"

    backfill = refresh(store_url, exchange, until="2024-02-01", since="2023-12-01")
    assert (backfill.fetched, backfill.written, backfill.requests) == (0, 0, 0)

    assert exchange.klines_requests() == []
    assert file_bytes(store_url, SYMBOL) == before


def test_incremental_refresh_equals_one_refresh(store_url, exchange, tmp_path):
    first = refresh(store_url, exchange, until="2024-02-10T05:00:00Z")
    second = refresh(store_url, exchange, until=UNTIL)
    assert first.written + second.written == DAYS_60
    assert second.requests == 1 and second.first_open_time == "2024-02-10T05:00:00Z" and second.gaps == []

    once = str(tmp_path / "once")
    refresh(once, exchange, until=UNTIL)
    assert_same(stored(store_url), stored(once))
    assert file_bytes(store_url, SYMBOL) == file_bytes(once, SYMBOL)  # byte for byte, whatever the steps


# -- what the exchange does not have --------------------------------------------------------


def test_exchange_outages_stay_gaps(store_url, exchange_factory):
    outages = [(parse_time_ms("2024-01-05T04:00Z"), 5), (SINCE + 1002 * HOUR_MS, 3)]  # the 2nd near a page edge
    exchange = exchange_factory(missing=outages)
    summary = refresh(store_url, exchange)
    assert summary.fetched == summary.written == DAYS_60 - 8
    assert summary.gaps == [
        {"after": "2024-01-05T03:00:00Z", "missing_hours": 5},
        {"after": "2024-02-11T17:00:00Z", "missing_hours": 3},
    ]
    candles = stored(store_url)
    assert_same(candles, exchange.closed_candles(SYMBOL, SINCE, UNTIL))
    assert not np.isin(parse_time_ms("2024-01-05T06:00Z"), candles.open_time)  # not forward-filled
    assert [(g.after_ms, g.hours) for g in CandleStore(store_url).read(SYMBOL).gaps] == [
        (outages[0][0] - HOUR_MS, 5),
        (outages[1][0] - HOUR_MS, 3),
    ]


def test_outage_at_the_end_of_one_refresh_is_reported_by_the_next(tmp_path, exchange_factory):
    exchange = exchange_factory(missing=[(parse_time_ms("2024-02-03T04:00Z"), 5)])
    url = str(tmp_path / "store")
    first = refresh(url, exchange, until="2024-02-03T06:00Z")
    assert first.last_open_time == "2024-02-03T03:00:00Z" and first.gaps == []
    second = refresh(url, exchange)
    assert second.first_open_time == "2024-02-03T09:00:00Z"
    assert second.gaps == [{"after": "2024-02-03T03:00:00Z", "missing_hours": 5}]
    assert_same(stored(url), exchange.closed_candles(SYMBOL, SINCE, UNTIL))


def test_the_open_candle_is_never_stored(tmp_path, exchange_factory):
    """The exchange's clock is mid-hour: it serves the 10:00 candle still open; we keep it out."""
    exchange = exchange_factory(now_ms=parse_time_ms("2024-03-01T10:30:00Z"))
    url = str(tmp_path / "store")
    # Our clock is far ahead of the exchange's (now_ms defaults to the real time): the server's
    # Date header is what tells that the 10:00 candle is not closed yet.
    summary = refresh(url, exchange, until="2024-03-02", since="2024-02-28")
    served = json.loads(_get(exchange.url + exchange.klines_requests()[-1]))
    assert served[-1][0] == parse_time_ms("2024-03-01T10:00Z")  # the open candle was served...
    assert summary.last_open_time == "2024-03-01T09:00:00Z"  # ...and not kept
    assert summary.written == 2 * 24 + 10

    # With our own clock mid-hour, the open candle is not even asked for.
    candles, _, _ = binance.fetch_klines(
        SYMBOL, parse_time_ms("2024-03-01"), parse_time_ms("2024-03-02"), exchange.url, now_ms=exchange.now_ms
    )
    assert candles.open_time[-1] == parse_time_ms("2024-03-01T09:00Z")

    exchange.now_ms = parse_time_ms("2024-03-01T11:00:05Z")  # the candle closes
    later = refresh(url, exchange, until="2024-03-02")
    assert (later.written, later.last_open_time) == (1, "2024-03-01T10:00:00Z")
    assert_same(stored(url), exchange.closed_candles(SYMBOL, parse_time_ms("2024-02-28"), parse_time_ms("2024-03-02")))


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


# -- faults -----------------------------------------------------------------------------------

RECOVERABLE = {
    "429 Retry-After": ([Fault.rate_limited(retry_after=3)], [3.0]),
    "418 Retry-After": ([Fault.rate_limited(retry_after=7, status=418)], [7.0]),
    "500": ([Fault.server_error(500)], []),  # urllib3 retries the first time at once
    "502 503 504": ([Fault.server_error(502), Fault.server_error(503), Fault.server_error(504)], None),
    "read timeout": ([Fault.slow(READ_TIMEOUT + 0.5)], []),
    "429 without Retry-After": ([Fault(429, b'{"code":-1003,"msg":"Too many requests."}')], []),
}


@pytest.mark.parametrize("page", [1, 2])
@pytest.mark.parametrize("case", RECOVERABLE)
def test_recoverable_faults_end_with_exactly_the_right_candles(tmp_path, exchange, sleeps, case, page):
    faults, expected_sleeps = RECOVERABLE[case]
    faults = [Fault(**vars(f)) for f in faults]  # fresh copies: the server counts them down
    exchange.push(*([Fault()] if page == 2 else []), *faults)
    url = str(tmp_path / "store")
    summary = refresh(url, exchange)
    assert_same(stored(url), exchange.closed_candles(SYMBOL, SINCE, UNTIL))
    assert summary.written == DAYS_60
    assert summary.requests == 2 + len(faults) == len(exchange.klines_requests())  # retries are counted
    if expected_sleeps is not None:
        assert sleeps == expected_sleeps  # Retry-After honoured exactly, and nothing else waited
    else:  # exponential backoff (factor 0.01) with jitter (up to 0.01): 0, then 0.02+, 0.04+
        assert len(sleeps) == 2 and 0.02 <= sleeps[0] <= 0.03 and 0.04 <= sleeps[1] <= 0.05
    assert exchange.pending_faults() == 0


def test_retry_after_is_honoured_with_the_real_sleep(tmp_path, exchange, monkeypatch):
    """Not through the injected sleep: the client really waits the 1 s the server asks for."""
    monkeypatch.setattr(binance, "RETRY_POLICY", binance.RetryPolicy(backoff_factor=0.01))
    exchange.push(Fault.rate_limited(retry_after=1))
    started = time.monotonic()
    candles, requests_made, _ = binance.fetch_klines(SYMBOL, SINCE, SINCE + 24 * HOUR_MS, api_url=exchange.url)
    assert time.monotonic() - started >= 1.0
    assert len(candles) == 24 and requests_made == 2


def _page_body(exchange, mutate) -> bytes:
    candles = exchange.series(SYMBOL)
    first = int(np.searchsorted(candles.open_time, parse_time_ms("2024-01-20")))  # where the refresh asks
    rows = [kline_row(candles, i) for i in range(first, first + 1000)]
    mutate(rows)
    return json.dumps(rows).encode()


def _set(row: int, col: int, value):
    def mutate(rows):
        rows[row][col] = value

    return mutate


MALFORMED = {
    "truncated": (lambda ex: b'[[1704067200000,"42000.1","42100.0"', "response is not JSON"),
    "html": (lambda ex: b"<html><body>Bad gateway</body></html>", "response is not JSON"),
    "object": (lambda ex: b'{"code":0,"msg":"maintenance"}', "expected a JSON array of klines, got a JSON dict"),
    "not rows": (lambda ex: b"[1, 2, 3]", "kline 0 is not an array of at least 7 items"),
    "short row": (lambda ex: _page_body(ex, lambda r: r[5].__delitem__(slice(6, None))), "kline 5 is not an array"),
    "price text": (lambda ex: _page_body(ex, _set(3, 4, "abc")), "kline 3 has a non-numeric close 'abc'"),
    "NaN price": (lambda ex: _page_body(ex, _set(3, 2, "NaN")), "kline 3 has a non-numeric high 'NaN'"),
    "infinite": (lambda ex: _page_body(ex, _set(3, 5, "1e999")), "kline 3 has a non-finite volume"),
    "null": (lambda ex: _page_body(ex, _set(7, 1, None)), "kline 7 has a non-numeric open None"),
    "time as text": (lambda ex: _page_body(ex, _set(2, 0, "1704067200000")), "kline 2 has a non-integer open time"),
    "off the hour": (lambda ex: _page_body(ex, lambda r: _shift(r[9], 60_000)), "kline 9 does not open on the hour"),
    "4h kline": (lambda ex: _page_body(ex, lambda r: _set(4, 6, r[4][0] + 4 * HOUR_MS - 1)(r)), "not a 1h kline"),
    "duplicate": (lambda ex: _page_body(ex, lambda r: r.__setitem__(11, list(r[10]))), "duplicated at kline 11"),
    "OHLC": (lambda ex: _page_body(ex, _set(6, 3, "999999999.0")), "OHLC violation at row 7"),
    "non-positive": (lambda ex: _page_body(ex, _set(6, 3, "0")), "non-positive price at row 7"),
}


def _shift(row: list, ms: int) -> None:
    row[0] += ms
    row[6] += ms


def prefilled(url: str, exchange) -> dict[str, bytes]:
    """A store holding Jan 1-19; the refresh under test would add Jan 20 - Mar 14 (2 pages)."""
    refresh(url, exchange, until="2024-01-20")
    exchange.reset_requests()
    return file_bytes(url, SYMBOL)


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_bodies_are_refused_and_nothing_is_stored(tmp_path, exchange, case):
    make_body, message = MALFORMED[case]
    url = str(tmp_path / "store")
    before = prefilled(url, exchange)
    exchange.push(Fault.malformed(make_body(exchange)))
    with pytest.raises(DataError, match="Binance klines for BTCUSDT: ") as caught:
        refresh(url, exchange, until="2024-03-15")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert file_bytes(url, SYMBOL) == before


UNRECOVERABLE = {
    "400 unknown symbol": (
        [Fault.invalid_symbol()],
        "Binance does not know the symbol BTCUSDT: Invalid symbol. (HTTP 400, code -1121)",
        1,
    ),
    "500 beyond the attempt budget": (
        [Fault.server_error(500, times=binance.RETRY_POLICY.max_attempts)],
        "Binance klines for BTCUSDT: Binance failed (HTTP 500, code -1001) after 5 attempt(s)",
        5,
    ),
    "timeouts beyond the attempt budget": (
        [Fault.slow(READ_TIMEOUT + 0.5, times=binance.RETRY_POLICY.max_attempts)],
        "Binance klines for BTCUSDT: no usable answer from http://127.0.0.1:",
        5,
    ),
    "429 beyond the attempt budget": (
        [Fault.rate_limited(retry_after=1, times=binance.RETRY_POLICY.max_attempts)],
        "rate limited by Binance (HTTP 429, code -1003, Retry-After 1s) after 5 attempt(s)",
        5,
    ),
    "418 ban longer than we wait": (
        [Fault.rate_limited(retry_after=3600, status=418)],
        "rate limited by Binance (HTTP 418, code -1003, Retry-After 3600s) after 1 attempt(s)",
        1,
    ),
    "403 from a firewall": ([Fault(403, b"<html>Forbidden</html>")], "Binance refused the request (HTTP 403)", 1),
    "body stalls past the read timeout": ([Fault.stalled_body(READ_TIMEOUT + 0.5)], "(ReadTimeoutError", 1),
}


REFUSED = ("400 unknown symbol", "403 from a firewall")


@pytest.mark.parametrize(
    ("case", "page"),
    # On page 2 too (after a good page 1), except the slowest case (5 read timeouts).
    [
        (case, page)
        for case in UNRECOVERABLE
        for page in (1, 2)
        if (case, page) != ("timeouts beyond the attempt budget", 2)
    ],
)
def test_unrecoverable_faults_raise_one_clear_error_and_store_nothing(tmp_path, exchange, case, page):
    faults, message, attempts = UNRECOVERABLE[case]
    faults = [Fault(**vars(f)) for f in faults]
    url = str(tmp_path / "store")
    before = prefilled(url, exchange)
    exchange.push(*([Fault()] if page == 2 else []), *faults)
    with pytest.raises(BacktestError) as caught:
        refresh(url, exchange, until="2024-03-15")
    assert message in str(caught.value) and "\n" not in str(caught.value)
    # The exchange's word that it cannot serve this request is final (3); running out of attempts is not (4).
    assert caught.value.exit_code == (EXIT_DATA if case in REFUSED else EXIT_IO)
    assert len(exchange.klines_requests()) == page - 1 + attempts  # and no retry of what cannot succeed
    assert file_bytes(url, SYMBOL) == before  # the first page was good, yet nothing of it was stored


def test_a_failed_cold_refresh_leaves_no_candle_files(store_url, exchange):
    exchange.push(Fault(), Fault.server_error(500, times=binance.RETRY_POLICY.max_attempts))
    with pytest.raises(SourceUnavailable, match="after 5 attempt"):
        refresh(store_url, exchange)
    assert CandleStore(store_url).months(SYMBOL) == []


def test_unreachable_exchange(tmp_path, sleeps):
    import socket

    with socket.socket() as probe:  # a free port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SourceUnavailable, match=rf"no usable answer from http://127.0.0.1:{port}/api/v3/klines"):
        refresh_pair(SYMBOL, str(tmp_path / "s"), until_ms=UNTIL, since_ms=SINCE, api_url=f"http://127.0.0.1:{port}")
    assert len(sleeps) == binance.RETRY_POLICY.max_attempts - 2  # backoff between attempts (the first retry is at once)


# -- the rate limit -----------------------------------------------------------------------------


def test_near_the_weight_limit_the_client_waits_for_the_next_minute(exchange_factory, sleeps):
    exchange = exchange_factory(weight_base=binance.WEIGHT_LIMIT_1M - binance.WEIGHT_SAFETY_MARGIN)
    candles, requests_made, _ = binance.fetch_klines(SYMBOL, SINCE, SINCE + 2500 * HOUR_MS, api_url=exchange.url)
    assert len(candles) == 2500 and requests_made == 3
    assert len(sleeps) == 2  # before the 2nd and the 3rd request, not after the last
    assert all(1.0 <= s <= 61.0 for s in sleeps)


def test_far_from_the_weight_limit_the_client_does_not_wait(exchange_factory, sleeps):
    exchange = exchange_factory(weight_base=binance.WEIGHT_LIMIT_1M - binance.WEIGHT_SAFETY_MARGIN - 20)
    candles, requests_made, _ = binance.fetch_klines(SYMBOL, SINCE, SINCE + 2500 * HOUR_MS, api_url=exchange.url)
    assert len(candles) == 2500 and requests_made == 3 and sleeps == []


# -- the command line ---------------------------------------------------------------------------


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return backtest_process("refresh", *args, env=env)


def assert_cli_error(proc: subprocess.CompletedProcess, error: type[BacktestError], message: str) -> None:
    """The refresh exited with `error`'s code, nothing on stdout and the one line `error: message` on stderr."""
    assert proc.returncode == error.exit_code and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"error: {message}"]


def test_cli_refresh_end_to_end(tmp_path, exchange):
    url = str(tmp_path / "store")
    env = {**os.environ, "BINANCE_API_URL": exchange.url}  # the variable instead of --api-url
    args = ("--symbol", SYMBOL, "--data-url", url, "--since", "2024-01-01", "--until", "2024-03-01T00:00:00Z")
    ok = _cli("--source", "binance", *args, env=env)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["written"] == summary["fetched"] == DAYS_60 and summary["requests"] == 2
    assert summary["synthetic"] is False and summary["source"] == "binance" and summary["gaps"] == []
    assert_same(stored(url), exchange.closed_candles(SYMBOL, SINCE, UNTIL))

    for symbol, error, message in [
        ("btc-usdt", InputError, "invalid symbol 'btc-usdt': must match ^[A-Z0-9]{2,20}$ (e.g. BTCUSDT)"),
        ("NOPEUSDT", DataError, "Binance does not know the symbol NOPEUSDT: Invalid symbol. (HTTP 400, code -1121)"),
    ]:
        proc = _cli("--symbol", symbol, "--data-url", url, "--until", "2024-03-01", "--api-url", exchange.url)
        assert_cli_error(proc, error, message)
    assert CandleStore(url).months("NOPEUSDT") == []


# -- overlapping refreshes ------------------------------------------------------------------------


def test_overlapping_refreshes_in_threads_neither_duplicate_nor_lose(store_url, exchange, monkeypatch):
    # Equally slow answers make both fetches end together, and a slow month write widens the
    # read-merge-write window: without the per-pair lock both would write January (duplicated
    # work) or one would overwrite February with fewer candles (lost candles).
    exchange.push(Fault(delay=0.1, times=4))
    write_month = CandleStore._write_month

    def slow_write_month(self, *args, **kwargs):
        time.sleep(0.05)
        return write_month(self, *args, **kwargs)

    monkeypatch.setattr(CandleStore, "_write_month", slow_write_month)
    barrier = threading.Barrier(2)
    summaries, errors = {}, []

    def run(until: str) -> None:
        barrier.wait()
        try:
            summaries[until] = refresh(store_url, exchange, until=until)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(u,)) for u in ("2024-02-15", "2024-03-01")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert sum(s.written for s in summaries.values()) == DAYS_60  # every candle written exactly once
    assert_same(stored(store_url), exchange.closed_candles(SYMBOL, SINCE, UNTIL))


def test_overlapping_refreshes_in_processes_neither_duplicate_nor_lose(store_url, exchange):
    exchange.push(Fault(delay=0.2, times=4))  # both fetches take as long, so they end together
    common = ("--symbol", SYMBOL, "--data-url", store_url, "--since", "2024-01-01", "--api-url", exchange.url)
    command = [sys.executable, "-m", "backtest", "refresh", *common]
    procs = [
        subprocess.Popen([*command, "--until", until], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        for until in ("2024-02-15", "2024-03-01")
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err.decode() for _, err in outputs]
    written = [json.loads(out)["written"] for out, _ in outputs]
    assert sum(written) == DAYS_60
    assert_same(stored(store_url), exchange.closed_candles(SYMBOL, SINCE, UNTIL))


# -- the synthetic source ---------------------------------------------------------------------------


def test_synthetic_refresh_is_deterministic_and_incremental(tmp_path, capsys):
    a, b, c = "2024-01-01", "2024-02-10T07:00:00Z", "2024-04-01"
    steps, once, again = (str(tmp_path / name) for name in ("steps", "once", "again"))

    def cli(url: str, until: str, since: str | None = None) -> dict:
        args = ["refresh", "--source", "synthetic", "--symbol", "SYNUSDT", "--data-url", url, "--until", until]
        assert main([*args, *(["--since", since] if since else [])]) == 0
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 1
        return json.loads(out[0])

    first = cli(steps, b, since=a)
    second = cli(steps, c)  # continues from the stored end: [b, c)
    assert first["synthetic"] is True and second["synthetic"] is True and second["source"] == "synthetic"
    assert first["requests"] == second["requests"] == 0
    assert second["first_open_time"] == "2024-02-10T07:00:00Z"
    whole = cli(once, c, since=a)
    cli(again, c, since=a)
    assert first["written"] + second["written"] == whole["written"] == 91 * 24
    assert file_bytes(steps, "SYNUSDT") == file_bytes(once, "SYNUSDT") == file_bytes(again, "SYNUSDT")
    assert CandleStore(steps).read("SYNUSDT").sources == {"synthetic"}


# -- history, outages and sources across refreshes ------------------------------------------------


def test_cli_since_before_the_stored_history_extends_it(tmp_path, exchange):
    """`--since` before a stored pair's first candle fetches the candles before it (not only for a new pair)."""
    url = str(tmp_path / "store")
    common = ("--symbol", SYMBOL, "--data-url", url, "--api-url", exchange.url, "--until", "2024-03-01")
    assert _cli(*common, "--since", "2024-01-01").returncode == 0
    exchange.reset_requests()
    longer = _cli(*common, "--since", "2023-11-01")
    assert longer.returncode == 0, longer.stderr
    summary = json.loads(longer.stdout)
    assert summary["fetched"] == summary["written"] == (30 + 31) * 24 and summary["requests"] == 2
    assert summary["first_open_time"] == "2023-11-01T00:00:00Z" and summary["last_open_time"] == "2023-12-31T23:00:00Z"
    assert all("startTime=" + str(parse_time_ms("2023-11-01")) in r for r in exchange.klines_requests()[:1])
    assert_same(stored(url), exchange.closed_candles(SYMBOL, parse_time_ms("2023-11-01"), UNTIL))


def test_cli_since_after_until_is_invalid(tmp_path, exchange):
    url = str(tmp_path / "store")
    args = ("--symbol", SYMBOL, "--data-url", url, "--api-url", exchange.url)
    bad = _cli(*args, "--since", "2026-11-01", "--until", "2026-10-01")
    assert_cli_error(bad, InputError, "--since 2026-11-01T00:00:00Z is not before --until 2026-10-01T00:00:00Z")
    assert exchange.klines_requests() == [] and not (tmp_path / "store").exists()


def test_outages_are_recorded_as_fetched_and_not_asked_for_again(store_url, exchange_factory):
    exchange = exchange_factory(missing=[(parse_time_ms("2024-01-05T04:00Z"), 5), (parse_time_ms("2023-12-20"), 48)])
    refresh(store_url, exchange)
    exchange.reset_requests()
    for extend in (False, True):
        again = refresh(store_url, exchange, extend_history=extend)
        assert (again.fetched, again.requests) == (0, 0)
    longer = refresh(store_url, exchange, since="2023-12-01", extend_history=True)  # Dec, with a 2-day outage
    assert longer.fetched == 31 * 24 - 48 and longer.requests == 1
    assert longer.gaps == [{"after": "2023-12-19T23:00:00Z", "missing_hours": 48}]
    assert (refresh(store_url, exchange, since="2023-12-01", extend_history=True).requests) == 0
    assert_same(stored(store_url), exchange.closed_candles(SYMBOL, parse_time_ms("2023-12-01"), UNTIL))
    record = CandleStore(store_url).read_record(SYMBOL)
    assert record.source == "binance" and record.covered == ((parse_time_ms("2023-12-01"), UNTIL),)


def test_a_pair_keeps_one_source_across_months(tmp_path, exchange):
    """`--source binance` on a pair stored from `--source synthetic` is refused, also for other months."""
    url = str(tmp_path / "store")
    first = _cli(
        "--source", "synthetic", "--symbol", SYMBOL, "--data-url", url, "--since", "2024-01-01", "--until", "2024-02-01"
    )
    assert first.returncode == 0, first.stderr
    before = file_bytes(url, SYMBOL)
    mixed = _cli("--symbol", SYMBOL, "--data-url", url, "--until", "2024-03-01", "--api-url", exchange.url)
    assert mixed.returncode == DataError.exit_code and mixed.stdout == ""
    (line,) = mixed.stderr.strip().splitlines()
    assert "holds synthetic candles; refusing to add binance candles (one source per pair)" in line
    assert f"delete {url}/candles/interval=1h/symbol={SYMBOL} to start over with binance" in line
    assert exchange.klines_requests() == [] and file_bytes(url, SYMBOL) == before  # refused before fetching
