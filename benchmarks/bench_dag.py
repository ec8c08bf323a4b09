"""Wall time of the daily DAG in local mode, and Airflow's overhead per mapped task.

    .venv/bin/python -m benchmarks.bench_dag [--pairs 10 50]

For each pair count: one `make demo` run in this process (backtest_airflow.local.demo.run_demo: dag.test,
synthetic data, local runner, lookback 365 days, window 15d) in a fresh store, timed by run_demo; then the same work without Airflow —
each pair's refresh in process and its `python -m backtest run` as a process (one pair a
process, so the bare work does not profit from chunking), one after the other as dag.test
runs them. Airflow's overhead per task instance is the difference divided by
the number of task instances (refresh and backtest per chunk of pairs, plan, rank).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from backtest.data.refresh import refresh_pair
from backtest.params import parse_time_ms
from backtest_airflow.local.demo import run_demo
from tests.support import airflow_env, backtest_process

DATE = "2026-11-01"


def dag_run_seconds(pairs: int, store: Path) -> tuple[float, int]:
    """One `make demo` run in this process (dag.test): its seconds and task instances."""
    os.environ["BACKTEST_DATA_URL"] = str(store)  # read when run_demo parses the DAG
    dag_run, _, seconds = run_demo(DATE, pairs)
    if dag_run.state != "success":
        raise SystemExit(f"DAG run {dag_run.run_id}: {dag_run.state}")
    return seconds, len(dag_run.get_task_instances())


def bare_work_seconds(pairs: int, store: Path) -> float:
    """The same refreshes and job processes, with no Airflow around them."""
    symbols = [f"SYN{i:04d}USDT" for i in range(pairs)]
    end = parse_time_ms(DATE)
    began = time.perf_counter()
    for symbol in symbols:
        refresh_pair(symbol, str(store), until_ms=end, history_days=365 + 16, source="synthetic")
        backtest_process(
            "run", "--symbol", symbol, "--data-url", str(store), "--start", "2025-11-01", "--end", DATE,
            "--window", "15d", "--results-url", str(store / "r"), check=True, timeout=None,
        )  # fmt: skip
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, nargs="+", default=[10, 50])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(airflow_env(Path(tmp) / "airflow", Path(tmp)))  # before Airflow is imported
        print(
            f"{'pairs':>5} {'task instances':>14} {'DAG run (s)':>11} {'per pair (s)':>12} "
            f"{'bare work (s)':>13} {'overhead per task (s)':>21}"
        )
        for pairs in args.pairs:
            wall, tasks = dag_run_seconds(pairs, Path(tmp) / f"store-{pairs}")
            bare = bare_work_seconds(pairs, Path(tmp) / f"bare-{pairs}")
            print(
                f"{pairs:>5} {tasks:>14} {wall:>11.1f} {wall / pairs:>12.2f} {bare:>13.1f} "
                f"{(wall - bare) / tasks:>21.3f}"
            )


if __name__ == "__main__":
    main()
