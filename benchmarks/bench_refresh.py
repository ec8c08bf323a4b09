"""How fast is the hourly candle refresh? Binance klines (a loopback stand-in) into the store.

    .venv/bin/python -m benchmarks.bench_refresh [--repeat 3] [--no-s3]

The exchange is tests/exchange.py (a real HTTP server speaking Binance's klines API), run in its
own process so that its JSON rendering does not compete with the client for the GIL; moto's S3
server also runs as its own process. No internet is used.

For a local-folder store (and for S3 on the moto server, unless --no-s3):
a) a cold 2-year refresh (730 days, 17,520 candles, 18 requests): wall time, candles written
   per second, requests per pair; and the fetch alone (HTTP + parsing + validation);
b) a daily incremental refresh (24 new candles): wall time and requests;
c) a refresh that finds the pair up to date: wall time and requests (none);
d) local only: the cold 2-year refresh as `python -m backtest refresh` in a new process.

Figures are medians of --repeat runs (each cold run on a fresh store), timed with perf_counter.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from backtest.data import binance
from backtest.data.refresh import refresh_pair
from backtest.params import parse_time_ms
from tests.support import REPO, aws_env, free_port

SYMBOL = "BTCUSDT"
UNTIL = parse_time_ms("2026-01-01")  # the cold refresh: 730 days before this
NEXT_DAY = parse_time_ms("2026-01-02")  # the daily incremental refresh
EXCHANGE_NOW = parse_time_ms("2026-01-02T00:30:00Z")  # the exchange's clock: mid-hour
HISTORY_DAYS = 730

_SERVE = """
import sys
from tests.exchange import FakeExchange  # run with cwd = the repo root
exchange = FakeExchange(now_ms=int(sys.argv[1])).start()
exchange.series("BTCUSDT")  # generate the candles before anyone times anything
print(exchange.url, flush=True)
sys.stdin.read()  # until the parent closes our stdin
exchange.stop()
"""


def start_exchange() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE, str(EXCHANGE_NOW)],
        cwd=REPO,  # `tests` is importable from the repo root
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        raise SystemExit(f"the exchange stand-in did not start (got {url!r})")
    return proc, url


def start_moto() -> tuple[subprocess.Popen, str] | None:
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        return None
    port = free_port()
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        proc.terminate()
        return None
    os.environ.update(aws_env(endpoint), AWS_REGION="us-east-1")
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)
    return proc, endpoint


def new_s3_store(endpoint: str) -> str:
    import boto3

    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/prefix"


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def bench_store(name: str, new_store, api_url: str, repeat: int) -> list[tuple]:
    """Rows (store, case, candles, requests, median seconds, candles per second)."""
    fetch_times, cold_times, daily_times, noop_times = [], [], [], []
    cold = daily = noop = None
    for _ in range(repeat):
        seconds, (candles, fetch_requests, _) = timed(
            lambda: binance.fetch_klines(SYMBOL, UNTIL - HISTORY_DAYS * 86_400_000, UNTIL, api_url=api_url)
        )
        fetch_times.append(seconds)
        url = new_store()
        seconds, cold = timed(
            lambda url=url: refresh_pair(SYMBOL, url, until_ms=UNTIL, history_days=HISTORY_DAYS, api_url=api_url)
        )
        cold_times.append(seconds)
        seconds, daily = timed(lambda url=url: refresh_pair(SYMBOL, url, until_ms=NEXT_DAY, api_url=api_url))
        daily_times.append(seconds)
        seconds, noop = timed(lambda url=url: refresh_pair(SYMBOL, url, until_ms=NEXT_DAY, api_url=api_url))
        noop_times.append(seconds)
    assert cold.written == 17_520 and daily.written == 24 and noop.written == 0, (cold, daily, noop)
    med = statistics.median
    return [
        (name, "fetch only, 2 years", len(candles), fetch_requests, med(fetch_times), len(candles) / med(fetch_times)),
        (name, "cold refresh, 2 years", cold.written, cold.requests, med(cold_times), cold.written / med(cold_times)),
        (
            name,
            "daily refresh, +24 h",
            daily.written,
            daily.requests,
            med(daily_times),
            daily.written / med(daily_times),
        ),
        (name, "up to date (no-op)", noop.written, noop.requests, med(noop_times), None),
    ]


def bench_cli(api_url: str, repeat: int) -> tuple:
    times = []
    summary = {}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, "-m", "backtest", "refresh", "--symbol", SYMBOL, "--data-url", f"{tmp}/store"]
            command += ["--until", "2026-01-01", "--history-days", str(HISTORY_DAYS), "--api-url", api_url]
            seconds, proc = timed(
                lambda command=command: subprocess.run(command, capture_output=True, text=True, cwd=REPO)
            )
            if proc.returncode != 0:
                raise SystemExit(f"CLI refresh failed: {proc.stderr.strip()}")
            summary = json.loads(proc.stdout)
            times.append(seconds)
    seconds = statistics.median(times)
    return (
        "local",
        "cold refresh, 2 years (CLI process)",
        summary["written"],
        summary["requests"],
        seconds,
        summary["written"] / seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 (moto server) runs")
    args = parser.parse_args()

    exchange, api_url = start_exchange()
    moto = None if args.no_s3 else start_moto()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            stores = iter(range(10_000))
            rows += bench_store("local", lambda: f"{tmp}/store-{next(stores)}", api_url, args.repeat)
        rows.append(bench_cli(api_url, args.repeat))
        if moto is not None:
            endpoint = moto[1]
            rows += bench_store("s3 (moto)", lambda: new_s3_store(endpoint), api_url, args.repeat)
    finally:
        exchange.stdin.close()
        exchange.wait(timeout=10)
        if moto is not None:
            moto[0].terminate()
            moto[0].wait(timeout=10)

    print(f"refresh benchmark: {platform.python_version()}, {os.cpu_count()} CPUs, median of {args.repeat} run(s)")
    print("exchange: tests/exchange.py on loopback (own process); one pair, 1h candles")
    header = ("store", "case", "candles", "requests", "wall s", "candles/s")
    print(f"{header[0]:<10} {header[1]:<38} {header[2]:>8} {header[3]:>8} {header[4]:>8} {header[5]:>10}")
    for store, case, candles, requests_made, seconds, rate in rows:
        rate_text = f"{rate:,.0f}" if rate is not None else "-"
        print(f"{store:<10} {case:<38} {candles:>8,} {requests_made:>8} {seconds:>8.3f} {rate_text:>10}")
    if moto is None and not args.no_s3:
        print("(S3 skipped: moto_server not found or did not start)")


if __name__ == "__main__":
    main()
