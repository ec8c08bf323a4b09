"""A 3-day backfill of the 10 configured pairs on `make airflow` (PostgreSQL, LocalExecutor).

    .venv/bin/python -m benchmarks.bench_backfill [--days 3]

Starts Airflow exactly as `make airflow` does (tests/support/live_airflow.py, fresh home and store,
synthetic candles, default params: a year of candles, window 15d), runs
a bad-params trigger (time to its failed run), then `airflow backfill create` for the days, and
reports:

- wall time, from the CLI call to the last run's end;
- the per-task scheduling gap: a task instance's start minus the moment the scheduler found it
  ready (`scheduled_when`), median and 90th percentile, over all task instances; split into the
  wait for a pool or executor slot (until `queued_when`) and the start itself (queued to start);
- the peak number of concurrent task processes: sampled every 0.2 s from the process table
  below `make airflow` (Airflow task runners, and the `python -m backtest` jobs they start), and from the task
  instances' start and end times.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import psutil

from tests.support import free_port
from tests.support.live_airflow import DAG_ID, LiveAirflow, concurrency, queued_seconds, scheduling_gaps

TASK_RUNNER = re.compile(r"airflow worker -- [0-9a-f-]{36}")  # a task's process title (task_runner.py)


def sample_processes(root: int, stop: threading.Event, peaks: dict[str, int]) -> None:
    """Count task-runner and backtest-job processes below `make airflow` until `stop` is set."""
    while not stop.is_set():
        runners = jobs = 0
        for proc in psutil.Process(root).children(recursive=True):
            try:
                cmdline = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            runners += bool(TASK_RUNNER.match(cmdline))
            jobs += " -m backtest run" in cmdline
        peaks["task runners"] = max(peaks.get("task runners", 0), runners)
        peaks["backtest jobs"] = max(peaks.get("backtest jobs", 0), jobs)
        peaks["both"] = max(peaks.get("both", 0), runners + jobs)
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=3)
    args = parser.parse_args()
    first = date(2026, 11, 10)
    last = first + timedelta(days=args.days - 1)

    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        home = Path(tmp) / "home"
        stack = LiveAirflow(home=home, port=free_port(), extra_env={"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"})
        began = time.perf_counter()
        stack.start()
        print(f"make airflow ready in {time.perf_counter() - began:.1f} s")
        try:
            stack.unpause()
            bad = {"pairs": ["btc-usd"], "window": "abc", "fee_bps": -3, "windw": 5}
            failed = stack.run_to_end(bad)
            print(f"bad params: run {failed['state']} {queued_seconds(failed):.1f} s after it was queued")
            stop, peaks = threading.Event(), {}
            sampler = threading.Thread(target=sample_processes, args=(stack.process.pid, stop, peaks), daemon=True)
            sampler.start()
            began = time.perf_counter()
            command = ["backfill", "create", "--dag-id", DAG_ID, "--from-date", str(first), "--to-date", str(last)]
            created = stack.cli(*command, "--max-active-runs", "3")
            assert created.returncode == 0, created.stderr[-2000:]
            run_ids = []
            while len(run_ids) < args.days:
                run_ids = [run["dag_run_id"] for run in stack.runs("backfill")]
                time.sleep(0.5)
            runs = stack.wait_for_runs(run_ids, timeout=1800)
            wall = time.perf_counter() - began
            stop.set()
            sampler.join()
            tis = [ti for run in runs for ti in stack.task_instances(run["dag_run_id"])]
            gaps = sorted(scheduling_gaps(tis))
            waits = sorted(scheduling_gaps(tis, until="queued_when"))
            starts = sorted(scheduling_gaps(tis, since="queued_when"))
            health = stack.health()
        finally:
            stack.stop()

    states = sorted({run["state"] for run in runs})
    print(f"backfill {first}..{last}: {len(runs)} runs {states}, {len(tis)} task instances, wall {wall:.1f} s")
    p90 = gaps[int(0.9 * (len(gaps) - 1))]
    print(
        f"scheduling gap (start - scheduled): median {statistics.median(gaps):.2f} s, p90 {p90:.2f} s, max {gaps[-1]:.2f} s"
    )
    print(f"  of which waiting for a slot (queued - scheduled): median {statistics.median(waits):.2f} s")
    print(f"  and starting (start - queued): median {statistics.median(starts):.2f} s, max {starts[-1]:.2f} s")
    print(
        f"peak concurrent task instances (from their start/end): {concurrency(tis)}; refresh: {concurrency(tis, 'refresh')}"
    )
    print(
        f"peak concurrent processes (sampled): {peaks.get('task runners', 0)} task runners, "
        f"{peaks.get('backtest jobs', 0)} backtest jobs, {peaks.get('both', 0)} together"
    )
    print("components at the end: " + ", ".join(f"{k} {v['status']}" for k, v in health.items() if isinstance(v, dict)))
    return 0 if states == ["success"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
