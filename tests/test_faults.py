"""Fault injection: the candle store survives SIGKILLs, an S3 endpoint that goes away, a full disk,
permission denied and a crashed lock holder.

Everything is real: `python -m backtest refresh` processes, the Binance stand-in (tests/exchange.py)
and moto's S3 server on loopback, a TCP proxy that is shut down in front of moto, `RLIMIT_FSIZE`
for the disk, capabilities dropped with `setpriv` for root. The SIGKILL lands at an exact storage
write through `tests/killpoint/sitecustomize.py` (the process kills itself, uncleanly, as a crash
would). Every faulted store must then reach, with one more refresh over the same range, exactly
the files one uninterrupted refresh stores (same bytes), without asking the exchange again for
what it had recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from backtest.data.locks import exclusive_lock
from backtest.data.storage import read_bytes, resolve
from backtest.data.store import CandleStore, missing_ranges
from backtest.params import parse_time_ms
from tests.exchange import FakeExchange
from tests.support import REPO, file_bytes

SYMBOL = "BTCUSDT"
KILLPOINT = str(REPO / "tests" / "killpoint")
LEASE_SECONDS = "1"  # the S3 lock lease in these tests (the default is 60 s)
COLD = ("2024-01-01", "2024-04-01")  # 3 months, 3 klines requests
HELD = ("2024-01-01", "2024-07-01")  # what the store holds before a history extension
EXTENDED_SINCE = "2023-01-01"  # 12 more months, back in time
# Kill points, as (before|after, n-th atomic write). A cold refresh writes the pair record, then
# each month file followed by the record: 7 writes. An extension writes 12 months + 12 records.
# On S3 each rerun after a kill also waits out the dead holder's lease, so S3 gets fewer points:
# a month written but not recorded, a month and its record written, all written but not unlocked.
KILLS = {
    ("cold", "local"): ["before:1", "after:1", "after:2", "before:5", "after:7"],
    ("cold", "s3"): ["before:1", "after:2", "after:7"],
    ("extend", "local"): ["before:1", "after:1", "after:10", "before:17", "after:24"],
    ("extend", "s3"): ["after:1", "after:10", "after:24"],
}


@pytest.fixture
def env(exchange, monkeypatch) -> dict:
    """The refresh processes' environment, over os.environ at each call (moto's AWS_* are set later):
    the stand-in exchange, a short S3 lease, the kill point folder."""
    monkeypatch.setenv("BACKTEST_LOCK_LEASE_SECONDS", LEASE_SECONDS)
    return {
        "BINANCE_API_URL": exchange.url,
        "BACKTEST_LOCK_LEASE_SECONDS": LEASE_SECONDS,
        "PYTHONPATH": KILLPOINT,  # its sitecustomize only: the project itself is installed
    }


def refresh_cli(env: dict, url: str, since: str, until: str, **popen) -> subprocess.CompletedProcess:
    args = ["--symbol", SYMBOL, "--data-url", url, "--since", since, "--until", until]
    command = [*popen.pop("prefix", []), sys.executable, "-m", "backtest", "refresh", *args]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, env={**os.environ, **env}, timeout=120, **popen
    )


def snapshot(url: str) -> dict[str, bytes]:
    """Every month file and the pair record, by name (what must converge byte for byte)."""
    return {**file_bytes(url, SYMBOL), "_pair.json": read_bytes(CandleStore(url).record_file(SYMBOL))}


def new_url(kind: str, tmp_path, name: str, request) -> str:
    if kind == "local":
        return str(tmp_path / name)
    return f"s3://{request.getfixturevalue('s3_bucket')}/{name}"


def kill_points(phase: str, kind: str, tmp_path, request):
    """(kill point, the URL of a new store for it) for each kill point of KILLS[phase, kind]."""
    for kill in KILLS[phase, kind]:
        yield kill, new_url(kind, tmp_path, f"{phase}-{kill.replace(':', '-')}", request)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Stores made by uninterrupted refreshes: the cold one, and the held one extended; from a
    stand-in exchange of their own with the same default data as each test's `exchange`."""
    folder = tmp_path_factory.mktemp("reference")
    urls = {}
    with FakeExchange() as exchange:
        env = {"BINANCE_API_URL": exchange.url}
        for name, steps in {"cold": [COLD], "extended": [HELD, (EXTENDED_SINCE, HELD[1])]}.items():
            urls[name] = str(folder / name)
            for since, until in steps:
                assert refresh_cli(env, urls[name], since, until).returncode == 0
    return {name: snapshot(url) for name, url in urls.items()}


def expected_fetch(exchange: FakeExchange, url: str, since: str, until: str) -> int:
    """Candles the exchange has in the part of [since, until) the store's record does not cover."""
    record = CandleStore(url).read_record(SYMBOL)
    covered = record.covered if record else ()
    start = min([parse_time_ms(since), *(r[0] for r in covered[:1])])
    return sum(
        len(exchange.closed_candles(SYMBOL, a, b)) for a, b in missing_ranges(start, parse_time_ms(until), covered)
    )


def kill_and_rerun(exchange, env: dict, url: str, since: str, until: str, kill: str) -> dict:
    """One SIGKILL at the kill point, then one plain refresh over the same range; the rerun's summary."""
    killed = refresh_cli({**env, "BACKTEST_TEST_KILL": kill}, url, since, until)
    assert killed.returncode == -9, killed.stderr  # really killed, where asked
    assert killed.stdout == ""
    want = expected_fetch(exchange, url, since, until)
    rerun = refresh_cli(env, url, since, until)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["fetched"] == want  # only what was not recorded as fetched is asked for again
    return summary


# -- SIGKILL at every kind of point ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_killed_cold_refresh_converges(kind, exchange, env, reference, tmp_path, request):
    for kill, url in kill_points("cold", kind, tmp_path, request):
        kill_and_rerun(exchange, env, url, *COLD, kill)
        assert snapshot(url) == reference["cold"], kill


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_killed_history_extension_converges(kind, exchange, env, reference, tmp_path, request):
    """Once a permanent hole: the next refresh found the oldest candle old enough and fetched nothing."""
    for kill, url in kill_points("extend", kind, tmp_path, request):
        assert refresh_cli(env, url, *HELD).returncode == 0
        kill_and_rerun(exchange, env, url, EXTENDED_SINCE, HELD[1], kill)
        assert snapshot(url) == reference["extended"], kill
        stored = CandleStore(url).read(SYMBOL, parse_time_ms(EXTENDED_SINCE), parse_time_ms(HELD[1]))
        assert stored.gaps == [], kill  # no hole: every hour from 2023-01 to 2024-07 is there
        again = refresh_cli(env, url, EXTENDED_SINCE, HELD[1])
        assert json.loads(again.stdout)["requests"] == 0  # and nothing is asked for a third time


# -- an S3 endpoint that goes away ------------------------------------------------------------------


class Proxy:
    """A loopback TCP proxy in front of moto that can be cut off after the n-th month file PUT."""

    def __init__(self, target: tuple[str, int], cut_after_month_puts: int):
        self.target, self.cut_after = target, cut_after_month_puts
        self.month_puts = 0
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b, watch in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pipe, args=(a, b, watch), daemon=True)
                thread.start()
                self.threads.append(thread)

    def _pipe(self, source: socket.socket, sink: socket.socket, watch: bool) -> None:
        try:
            while data := source.recv(65536):
                if watch and data.startswith(b"PUT ") and b"month" in data.split(b"\r\n", 1)[0]:
                    self.month_puts += 1
                    if self.month_puts > self.cut_after:
                        self.shut()  # the endpoint goes away, mid-refresh
                        return
                sink.sendall(data)
        except OSError:
            pass

    def shut(self) -> None:
        self.cut.set()
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_an_s3_endpoint_that_goes_away_is_exit_4_and_leaves_no_lock_beyond_the_lease(
    env, reference, moto_server, s3_bucket
):
    from urllib.parse import urlparse

    import boto3

    moto = urlparse(moto_server)
    proxy = Proxy((moto.hostname, moto.port), cut_after_month_puts=1)
    url = f"s3://{s3_bucket}/cut"
    try:
        cut = refresh_cli({**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}, url, *COLD)
    finally:
        proxy.shut()
    errors = [line for line in cut.stderr.splitlines() if line.startswith("error:")]
    assert cut.returncode == 4 and cut.stdout == "", cut.stderr  # retryable, no traceback
    assert len(errors) == 1 and "Traceback" not in cut.stderr, cut.stderr
    assert "could not release the lock" in cut.stderr  # tried, logged, did not mask the error
    lock_key = "cut/locks/candles-1h-BTCUSDT.lock"
    boto3.client("s3", endpoint_url=moto_server).head_object(Bucket=s3_bucket, Key=lock_key)  # left behind

    started = time.monotonic()
    again = refresh_cli(env, url, *COLD)  # moto directly: the endpoint is back
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - started < float(LEASE_SECONDS) + 15  # the lease, not a 600 s wait
    assert "taking over the lock" in again.stderr
    assert snapshot(url) == reference["cold"]


# -- disk full, permission denied ---------------------------------------------------------------------


def test_a_full_disk_is_exit_4_and_the_store_stays_valid(env, reference, tmp_path):
    url = str(tmp_path / "full")

    def small_disk() -> None:  # as `ulimit -f 16`: files may not grow past 16 KiB
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))

    full = refresh_cli(env, url, *COLD, preexec_fn=small_disk)
    lines = full.stderr.strip().splitlines()
    assert full.returncode == 4 and full.stdout == "" and lines[-1].startswith("error: storage or network I/O")
    assert "File too large" in lines[-1]
    leftovers = [n for _, _, files in os.walk(tmp_path / "full") for n in files if ".tmp-" in n]
    assert leftovers == []  # no half-written file
    CandleStore(url).read(SYMBOL)  # what is there reads and validates: no half-written month
    kept = {m: data for m, data in snapshot(url).items() if data is not None and m != "_pair.json"}
    assert kept.items() <= reference["cold"].items()
    assert CandleStore(url).read_record(SYMBOL).covered == ()  # and nothing is recorded as fetched
    assert refresh_cli(env, url, *COLD).returncode == 0
    assert snapshot(url) == reference["cold"]


def _without_root_privileges() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("running as root without setpriv: cannot drop the capability to ignore file modes")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def test_permission_denied_is_exit_3_and_the_store_is_unchanged(env, reference, tmp_path):
    url = str(tmp_path / "readonly")
    assert refresh_cli(env, url, *COLD).returncode == 0
    before = snapshot(url)
    for folder, _dirs, files in os.walk(url):
        for name in files:
            os.chmod(os.path.join(folder, name), 0o444)
        os.chmod(folder, 0o555)
    try:
        denied = refresh_cli(env, url, COLD[0], "2024-05-01", prefix=_without_root_privileges())
        lines = denied.stderr.strip().splitlines()
        assert denied.returncode == 3 and denied.stdout == "", denied.stderr  # a retry cannot fix it
        assert lines[-1].startswith("error: storage refused the operation:") and "Permission denied" in lines[-1]
        assert snapshot(url) == before
    finally:
        for folder, _, _ in os.walk(url):
            os.chmod(folder, 0o755)


# -- locks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_busy_lock_is_exit_4_naming_its_holder(kind, env, tmp_path, request):
    url = new_url(kind, tmp_path, "busy", request)
    lock = CandleStore(url).lock(SYMBOL)
    with lock:  # this test process holds it (renewed by its heartbeat on S3) while a refresh waits
        time.sleep(1.5 * float(LEASE_SECONDS))  # past one lease: renewals keep it ours
        waited = refresh_cli({**env, "BACKTEST_LOCK_WAIT_SECONDS": "1"}, url, *COLD)
    lines = waited.stderr.strip().splitlines()
    assert waited.returncode == 4 and waited.stdout == ""  # retryable, after BACKTEST_LOCK_WAIT_SECONDS
    assert f"could not lock {resolve(url).join('locks', 'candles-1h-BTCUSDT.lock').url} within 1s: held by" in lines[-1]
    assert f"{os.uname().nodename}:{os.getpid()} (taken " in lines[-1]
    assert refresh_cli(env, url, *COLD).returncode == 0  # released: the next one goes ahead


def test_a_crashed_holders_s3_lock_expires_after_its_lease(env, s3_bucket):
    url = f"s3://{s3_bucket}/crashed"
    killed = refresh_cli({**env, "BACKTEST_TEST_KILL": "after:1"}, url, *COLD)  # dies holding the lock
    assert killed.returncode == -9
    started = time.monotonic()
    with exclusive_lock(resolve(url).join("locks", "candles-1h-BTCUSDT.lock"), wait_seconds=30) as lease:
        waited = time.monotonic() - started
        lease.ensure_held()
    assert waited < float(LEASE_SECONDS) + 5
