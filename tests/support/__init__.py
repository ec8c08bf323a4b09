"""What the tests (and the benchmarks) share, once: paths, ports, the environment, candle builders
and checks, the job's CLI in-process.

Importing it imports neither Airflow nor pandas, so a benchmark can use it before it sets up
Airflow's environment. DAG loading and finished runs are in `tests.support.dag`, the client of a
live `make airflow` in `tests.support.live_airflow`; the Binance stand-in is `tests.exchange`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np

from backtest.data.candles import VALUE_COLUMNS, Candles
from backtest.data.storage import read_bytes
from backtest.data.store import CandleStore
from backtest.params import HOUR_MS, parse_time_ms

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = Path(sys.executable).with_name("airflow")  # the venv's `airflow` CLI
T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS  # 2023-11-14T22:00Z
# What the `store` fixture (tests/conftest.py) holds: synthetic BTCUSDT and ETHUSDT candles.
STORE_PAIRS = ("BTCUSDT", "ETHUSDT")
STORE_SINCE, STORE_UNTIL = parse_time_ms("2024-01-01"), parse_time_ms("2024-05-01")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set environment variables (None: unset them) for the duration of a block; restore them after."""
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            _set_env(key, value)
        yield
    finally:
        for key, value in saved.items():
            _set_env(key, value)


def _set_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def aws_env(endpoint: str | None = None) -> dict[str, str]:
    """Test credentials and region for boto3 and the AWS CLI; with `endpoint`, every client goes there."""
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    return {**env, "AWS_ENDPOINT_URL": endpoint} if endpoint else env


def airflow_env(home: Path, data_url: Path | str) -> dict[str, str]:
    """Settings of an Airflow of its own (home, SQLite DB, store) running the project's DAGs and
    plugins in local mode on synthetic candles, without task retries: the test session's and the
    benchmarks' (`make demo` and `make airflow` get theirs from the Makefile)."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "backtest_airflow.settings.SQLITE_CONNECT_ARGS",
        "BACKTEST_DATA_URL": str(data_url),
        "BACKTEST_SOURCE": "synthetic",
        "BACKTEST_EXECUTOR": "local",
        "BACKTEST_TASK_RETRIES": "0",
    }


# -- candles ----------------------------------------------------------------------------------


def make_candles(opens, closes, start_ms: int = T0, volume: float = 1.0) -> Candles:
    """Valid candles from opens and closes (high/low just outside them), hourly from start."""
    o = np.asarray(opens, dtype=np.float64)
    c = np.asarray(closes, dtype=np.float64)
    t = start_ms + np.arange(len(c), dtype=np.int64) * HOUR_MS
    return Candles(t, o, np.maximum(o, c) * 1.01, np.minimum(o, c) * 0.99, c, np.full(len(c), volume))


def assert_same(a: Candles, b: Candles) -> None:
    """The same candles, column by column, to the bit."""
    assert len(a) == len(b)
    for name in ("open_time", *VALUE_COLUMNS):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def file_bytes(store: CandleStore | str, symbol: str) -> dict[str, bytes]:
    """A pair's month files in a store (or at a store URL), by month: what must match byte for byte."""
    store = store if isinstance(store, CandleStore) else CandleStore(store)
    return {m: read_bytes(store.month_file(symbol, m)) for m in store.months(symbol)}


def reference_backtest(opens, closes, window: int, first_bar: int, fee: float) -> tuple[list[int], list[float]]:
    """sma_trend written as a plain loop straight from the spec (exact SMA comparison)."""
    signal = []
    for t in range(len(closes)):
        if t < window - 1:
            signal.append(0)
            continue
        total = sum(Fraction(x) for x in closes[t - window + 1 : t + 1])
        signal.append(1 if Fraction(closes[t]) * window > total else 0)
    return reference_run(opens, closes, signal, first_bar, fee)


def reference_run(opens, closes, signal, first_bar: int, fee: float) -> tuple[list[int], list[float]]:
    """(positions, equity) of any signal per bar over bars [first_bar, end), as a plain loop from the
    engine's rules: p_0 = 0, p_t = signal_{t-1}, fills at the next open, fee per side."""
    o, c = opens[first_bar:], closes[first_bar:]
    positions = [0] + [signal[first_bar + t - 1] for t in range(1, len(c))]
    equity = [1.0]
    for t in range(1, len(c)):
        prev, cur, e = positions[t - 1], positions[t], equity[-1]
        if prev and cur:
            e = e * c[t] / c[t - 1]
        elif cur:
            e = e * (1 - fee) * c[t] / o[t]
        elif prev:
            e = e * (o[t] / c[t - 1]) * (1 - fee)
        equity.append(e)
    return positions, equity


# -- the job's CLI ---------------------------------------------------------------------------------


def backtest_process(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """`python -m backtest ARGS` (the container's entrypoint) as a process from the repo root; its
    output captured as text. `kwargs` go to subprocess.run (env, timeout: 120 s, ...)."""
    kwargs.setdefault("timeout", 120)
    command = [sys.executable, "-m", "backtest", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, **kwargs)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`python -m backtest run ARGS` in this process: (exit code, stdout, stderr)."""
    from backtest.cli import main

    code = main(["run", *args])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *args: str) -> tuple[int, list[dict]]:
    """`python -m backtest run ARGS` in this process: (exit code, the JSON objects it printed)."""
    code, out, _ = run_cli(capsys, *args)
    return code, [json.loads(line) for line in out.splitlines()]
