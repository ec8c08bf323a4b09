"""Scale: the daily DAG in local mode for 100 and 1,000 pairs, one window and a 60-window sweep.

    .venv/bin/python -m benchmarks.bench_scale [--pairs 100 1000]

Synthetic data, 3 years (1,095 days) of hourly candles per pair in the backtest window. For
each pair count, in one fresh store and AIRFLOW_HOME:
  1. cold: the first run refreshes 3 years + warm-up per pair, then backtests one window (15d);
  2. daily: the next day's run, one window (incremental refresh of 24 candles per pair);
  3. sweep: the same day again with 60 windows (1d:60d:1d).
Each run is `make demo`'s run_demo (dag.test, runs task instances one after another), in one
process per pair count.
Reported: wall time (DB migration, DAG parse and dag.test), per pair, peak memory so far
(largest process: the DAG runner or a job), and the number of task instances. Then the engine alone: a 60-window sweep over 24,000 bars.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support import REPO, airflow_env

RUNS = (  # label, logical date, window
    ("cold store, 1 window (15d)", "2026-11-01", "15d"),
    ("next day, 1 window (15d)", "2026-11-02", "15d"),
    ("same day, 60 windows", "2026-11-02", "1d:60d:1d"),
)


def dag_runs(pairs: int) -> None:
    """The three runs of one pair count in this process, in a fresh AIRFLOW_HOME and store (set
    before Airflow is imported: hence one process per pair count); a line each."""
    from backtest_airflow.local.demo import run_demo

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(airflow_env(Path(tmp) / "airflow", Path(tmp) / "store"))
        for label, date, window in RUNS:
            began = time.perf_counter()
            dag_run, _, _ = run_demo(date, pairs, window, lookback_days=1095)
            wall = time.perf_counter() - began
            if dag_run.state != "success":
                raise SystemExit(f"DAG run {dag_run.run_id}: {dag_run.state}")
            peak_mib = max(
                resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
            )
            tasks = len(dag_run.get_task_instances())
            print(
                f"{pairs:>6} {label:<28} {tasks:>5} {wall:>8.1f} {wall / pairs * 1000:>8.1f} {peak_mib / 1024:>9.0f}",
                flush=True,
            )


def engine_sweep_ms() -> float:
    """A 60-window sma_trend sweep as the job runs it: signal blocks, then equity and metrics per block."""
    import numpy as np

    from backtest.data.synthetic import synthetic_candles
    from backtest.job import Segment, signal_blocks
    from backtest.params import parse_time_ms
    from backtest.strategy import grid_of

    candles = synthetic_candles(
        "BTCUSDT", parse_time_ms("2023-01-01"), parse_time_ms("2023-01-01") + 24_000 * 3_600_000
    )
    grid = grid_of("sma_trend", {"window": "1d:60d:1d"})
    segment = Segment.of(candles, grid.warmup_bars(), len(candles))  # every window warmed up
    times = []
    for _ in range(7):
        began = time.perf_counter()
        for _, signals in signal_blocks(grid.strategy, candles, grid.combos, segment.first):
            segment.metrics(signals, 0.001)
        times.append(time.perf_counter() - began)
    return float(np.median(times)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--dag-runs-only", action="store_true", help=argparse.SUPPRESS)  # one pair count's process
    args = parser.parse_args()
    if args.dag_runs_only:
        dag_runs(args.pairs[0])
        return
    print(f"engine alone: 60-window sweep (1d..60d) over 24,000 bars, with metrics: {engine_sweep_ms():.1f} ms")
    print(f"{'pairs':>6} {'run':<28} {'tasks':>5} {'wall s':>8} {'ms/pair':>8} {'peak MiB':>9}", flush=True)
    for pairs in args.pairs:
        command = [sys.executable, "-m", "benchmarks.bench_scale", "--dag-runs-only", "--pairs", str(pairs)]
        subprocess.run(command, cwd=REPO, check=True)


if __name__ == "__main__":
    main()
