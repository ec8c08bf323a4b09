"""A stand-in for Binance's REST API on loopback, for tests and benchmarks (no internet needed).

`FakeExchange` is a real HTTP server (`http.server.ThreadingHTTPServer` in a thread, port 0)
serving `GET /api/v3/klines` in Binance's format from deterministic synthetic candles:

- paging like the real API: rows with startTime <= openTime <= endTime, ascending, at most
  `limit` of them (default 500, at most 1000); without startTime, the newest `limit` rows;
- a fixed "now": the candle that opened in the current hour is served too, still open (its
  closeTime is in the future), as the real API does; the `Date` header tells that "now";
- optional missing hours (an exchange outage) that are simply not served;
- Binance's errors: 400 `{"code": -1121, "msg": "Invalid symbol."}` for an unknown symbol,
  -1120 for another interval, -1130 for a bad limit, -1102 without a symbol;
- `X-MBX-USED-WEIGHT-1m` on every answer: 2 per klines request in the current wall-clock minute,
  plus `weight_base` (other traffic from "our IP"); the limit itself is not enforced;
- fault injection: `push(Fault...)` queues scripted answers that the next klines requests get
  in order (429/418 with Retry-After, 5xx, a slow answer, a stall mid-body, a malformed body);
- every request is recorded (`requests`, as path?query) so tests can count them.
"""

from __future__ import annotations

import collections
import email.utils
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

from backtest.data.candles import Candles
from backtest.data.synthetic import EPOCH_MS, synthetic_candles
from backtest.params import HOUR_MS, parse_time_ms

DEFAULT_NOW_MS = parse_time_ms("2024-07-01T00:30:00Z")  # mid-hour: the 00:00 candle is still open
KLINES_WEIGHT = 2


@dataclass
class Fault:
    """A scripted answer for the next klines request(s): `times` requests get it."""

    status: int = 200
    body: bytes | None = None  # None: the normal klines answer (after `delay`)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line (a slow server)
    stall: float = 0.0  # seconds to stop half way through the body (a stalled transfer)
    times: int = 1

    @classmethod
    def rate_limited(cls, retry_after: int = 1, status: int = 429, times: int = 1) -> Fault:
        msg = "Way too much request weight used; IP banned." if status == 418 else "Too many requests."
        body = json.dumps({"code": -1003, "msg": msg}).encode()
        return cls(status, body, {"Retry-After": str(retry_after)}, times=times)

    @classmethod
    def server_error(cls, status: int = 500, times: int = 1) -> Fault:
        body = json.dumps({"code": -1001, "msg": "Internal error; unable to process your request."}).encode()
        return cls(status, body, times=times)

    @classmethod
    def slow(cls, seconds: float, times: int = 1) -> Fault:
        return cls(delay=seconds, times=times)

    @classmethod
    def stalled_body(cls, seconds: float, times: int = 1) -> Fault:
        return cls(stall=seconds, times=times)

    @classmethod
    def malformed(cls, body: bytes = b'[[1704067200000, "42000.1", "42100.0"', times: int = 1) -> Fault:
        return cls(200, body, times=times)

    @classmethod
    def invalid_symbol(cls, times: int = 1) -> Fault:
        return cls(400, json.dumps({"code": -1121, "msg": "Invalid symbol."}).encode(), times=times)


class FakeExchange:
    """The server; use as a context manager or call start() and stop()."""

    def __init__(
        self,
        now_ms: int = DEFAULT_NOW_MS,
        symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
        missing: tuple[tuple[int, int], ...] | list[tuple[int, int]] = (),
        listed_ms: int = EPOCH_MS,
        weight_base: int = 0,
    ):
        """`missing`: (first open time, hours) outages; `listed_ms`: the first candle served."""
        self.now_ms = int(now_ms)
        self.symbols = frozenset(symbols)
        self.missing = tuple((int(t), int(h)) for t, h in missing)
        self.listed_ms = int(listed_ms)
        self.weight_base = int(weight_base)
        self.requests: list[str] = []
        self._faults: collections.deque[Fault] = collections.deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._series: dict[tuple, Candles] = {}
        self._weight_minute = -1
        self._weight = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeExchange:
        exchange = self

        class Handler(_KlinesHandler):
            pass

        Handler.exchange = exchange
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name="fake-exchange", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeExchange:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- scripting and inspection ------------------------------------------------------------

    def push(self, *faults: Fault) -> None:
        """Queue scripted answers for the next klines requests (in order)."""
        with self._lock:
            self._faults.extend(faults)

    def pending_faults(self) -> int:
        with self._lock:
            return sum(f.times for f in self._faults)

    def klines_requests(self) -> list[str]:
        with self._lock:
            return [r for r in self.requests if r.startswith("/api/v3/klines")]

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def series(self, symbol: str) -> Candles:
        """Every candle the exchange has for a pair, the open one included, outages removed."""
        with self._lock:
            key = (symbol, self.now_ms, self.missing)  # tests may move the clock on
            if key not in self._series:
                candles = synthetic_candles(symbol, self.listed_ms, self.now_ms - self.now_ms % HOUR_MS + HOUR_MS)
                gone = np.zeros(len(candles), dtype=bool)
                for first, hours in self.missing:
                    gone |= (candles.open_time >= first) & (candles.open_time < first + hours * HOUR_MS)
                self._series[key] = candles.take(~gone)
            return self._series[key]

    def closed_candles(self, symbol: str, start_ms: int, until_ms: int) -> Candles:
        """What a correct client should store for [start, until): served, closed candles."""
        candles = self.series(symbol)
        keep = (candles.open_time >= start_ms) & (candles.open_time < until_ms)
        keep &= candles.open_time + HOUR_MS - 1 < self.now_ms
        return candles.take(keep)

    # -- serving ------------------------------------------------------------------------------

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            fault.times -= 1
            if fault.times <= 0:
                self._faults.popleft()
            return fault

    def _used_weight(self, add: int) -> int:
        with self._lock:
            minute = int(time.time() // 60)
            if minute != self._weight_minute:
                self._weight_minute, self._weight = minute, 0
            self._weight += add
            return self.weight_base + self._weight

    def _klines(self, query: dict[str, list[str]]) -> tuple[int, bytes]:
        def arg(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        symbol = arg("symbol")
        if not symbol:
            return 400, _error(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if symbol not in self.symbols:
            return 400, _error(-1121, "Invalid symbol.")
        if arg("interval") != "1h":
            return 400, _error(-1120, "Invalid interval.")
        try:
            limit = int(arg("limit") or 500)
            start = int(arg("startTime")) if arg("startTime") is not None else None
            end = int(arg("endTime")) if arg("endTime") is not None else None
        except ValueError:
            return 400, _error(-1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= 1000:
            return 400, _error(-1130, "Data sent for parameter 'limit' is not valid.")
        candles = self.series(symbol)
        t = candles.open_time
        lo = 0 if start is None else int(np.searchsorted(t, start, side="left"))
        hi = len(t) if end is None else int(np.searchsorted(t, end, side="right"))
        lo, hi = (lo, min(hi, lo + limit)) if start is not None else (max(lo, hi - limit), hi)
        rows = [kline_row(candles, i) for i in range(lo, hi)]
        return 200, json.dumps(rows, separators=(",", ":")).encode()


def _error(code: int, msg: str) -> bytes:
    return json.dumps({"code": code, "msg": msg}).encode()


def kline_row(candles: Candles, i: int) -> list:
    open_time = int(candles.open_time[i])
    o, h, low, c, v = (
        float(candles.open[i]),
        float(candles.high[i]),
        float(candles.low[i]),
        float(candles.close[i]),
        float(candles.volume[i]),
    )
    quote = v * (o + c) / 2
    return [
        open_time,
        f"{o:.8f}",
        f"{h:.8f}",
        f"{low:.8f}",
        f"{c:.8f}",
        f"{v:.8f}",
        open_time + HOUR_MS - 1,
        f"{quote:.8f}",
        int(v) % 10_000 + 1,
        f"{v / 2:.8f}",
        f"{quote / 2:.8f}",
        "0",
    ]


class _KlinesHandler(BaseHTTPRequestHandler):
    exchange: FakeExchange
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API
    timeout = 10  # drop idle connections

    def log_message(self, format, *args) -> None:  # quiet
        pass

    def date_time_string(self, timestamp=None) -> str:
        """The Date header tells the exchange's (fixed) clock, like the real API tells its own."""
        return email.utils.formatdate(self.exchange.now_ms / 1000, usegmt=True)

    def do_GET(self) -> None:
        exchange = self.exchange
        with exchange._lock:
            exchange.requests.append(self.path)
        parts = urlsplit(self.path)
        if parts.path != "/api/v3/klines":
            self._send(404, _error(-1000, "Not found."), {})
            return
        weight = exchange._used_weight(KLINES_WEIGHT)
        headers = {"X-MBX-USED-WEIGHT-1m": str(weight)}
        fault = exchange._next_fault()
        if fault is not None and fault.delay and exchange._stopping.wait(fault.delay):
            return
        if fault is not None and fault.body is not None:
            self._send(fault.status, fault.body, {**headers, **fault.headers})
            return
        status, body = exchange._klines(parse_qs(parts.query))
        self._send(status, body, headers, stall=fault.stall if fault is not None else 0.0)

    def _send(self, status: int, body: bytes, headers: dict[str, str], stall: float = 0.0) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if stall:
                half = len(body) // 2
                self.wfile.write(body[:half])
                self.wfile.flush()
                if self.exchange._stopping.wait(stall):
                    return
                self.wfile.write(body[half:])
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its read timeout)
