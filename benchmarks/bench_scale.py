"""Scale: the daily DAG in local mode for 100 and 1,000 pairs, one window and a 60-window sweep.

    .venv/bin/python -m benchmarks.bench_scale [--pairs 100 1000]

Synthetic data, 3 years (1,095 days) of hourly candles per pair in the backtest window. For
each pair count, in one fresh store and AIRFLOW_HOME:
  1. cold: the first run refreshes 3 years + warm-up per pair, then backtests one window (15d);
  2. daily: the next day's run, one window (incremental refresh of 24 candles per pair);
  3. sweep: the same day again with 60 windows (1d:60d:1d).
Each run is a `make demo`-style process (dag.test, runs task instances one after another).
Reported: wall time, per pair, peak memory (largest process: the DAG runner or a job), and
the number of task instances. Then the engine alone: a 60-window sweep over 24,000 bars.
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_dag import airflow_env

REPO = Path(__file__).resolve().parents[1]


def dag_run(env: dict, pairs: int, date: str, window: str) -> tuple[float, int, float]:
    """(wall seconds, task instances, peak RSS in MiB of the largest process) of one DAG run."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "backtest_airflow.demo", "--date", date, "--pairs", str(pairs)]
        + ["--window", window, "--lookback-days", "1095"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    wall = time.perf_counter() - began
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    match = re.search(r": success in [0-9.]+ s, ([0-9]+) task instances", done.stdout)
    if not match:
        raise SystemExit(f"DAG run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall, int(match.group(1)), peak_mib


def engine_sweep_ms() -> float:
    import numpy as np

    from backtest.engine import run_windows
    from backtest.metrics import compute_metrics
    from backtest.params import parse_time_ms, parse_windows
    from backtest.synthetic import synthetic_candles

    candles = synthetic_candles(
        "BTCUSDT", parse_time_ms("2023-01-01"), parse_time_ms("2023-01-01") + 24_000 * 3_600_000
    )
    windows = [bars for _, bars in parse_windows("1d:60d:1d")]
    first = max(windows) - 1
    o, c = candles.open, candles.close
    times = []
    for _ in range(7):
        began = time.perf_counter()
        runs = run_windows(o, c, first, windows, 0.001)
        for run in runs:
            compute_metrics(run.equity, run.position, o[first:], c[first:], 0.001, gaps=0)
        times.append(time.perf_counter() - began)
    return float(np.median(times)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    print(f"engine alone: 60-window sweep (1d..60d) over 24,000 bars, with metrics: {engine_sweep_ms():.1f} ms")
    print(f"{'pairs':>6} {'run':<28} {'tasks':>5} {'wall s':>8} {'ms/pair':>8} {'peak MiB':>9}")
    for pairs in args.pairs:
        with tempfile.TemporaryDirectory() as tmp:
            env = airflow_env(Path(tmp) / "airflow", Path(tmp) / "store")
            subprocess.run(
                [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
                env=env,
                check=True,
                capture_output=True,
            )
            for label, date, window in (
                ("cold store, 1 window (15d)", "2026-11-01", "15d"),
                ("next day, 1 window (15d)", "2026-11-02", "15d"),
                ("same day, 60 windows", "2026-11-02", "1d:60d:1d"),
            ):
                wall, tasks, peak = dag_run(env, pairs, date, window)
                print(
                    f"{pairs:>6} {label:<28} {tasks:>5} {wall:>8.1f} {wall / pairs * 1000:>8.1f} {peak:>9.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
