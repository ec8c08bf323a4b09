"""Wall time of the daily DAG in local mode, and Airflow's overhead per mapped task.

    .venv/bin/python -m benchmarks.bench_dag [--pairs 10 50]

For each pair count: one `make demo`-style run (dag.test, synthetic data, local runner, lookback
365 days, window 15d) in a fresh store, timed end to end; then the same work without Airflow —
each pair's refresh in process and its `python -m backtest run` as a process (one pair a
process, so the bare work does not profit from chunking), one after the other as dag.test
runs them. Airflow's overhead per task instance is the difference divided by
the number of task instances (refresh and backtest per chunk of pairs, plan, rank).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backtest.params import parse_time_ms
from backtest.refresh import refresh_pair

REPO = Path(__file__).resolve().parents[1]

DATE = "2026-11-01"


def airflow_env(home: Path, store: Path) -> dict[str, str]:
    """Environment of a local-mode Airflow with its own home and store (also used by bench_scale)."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "BACKTEST_DATA_URL": str(store),
        "BACKTEST_SOURCE": "synthetic",
        "BACKTEST_EXECUTOR": "local",
        "BACKTEST_TASK_RETRIES": "0",
    }


def dag_run_seconds(pairs: int, home: Path, store: Path) -> tuple[float, int]:
    env = airflow_env(home, store)
    done = subprocess.run(
        [sys.executable, "-m", "backtest_airflow.demo", "--date", DATE, "--pairs", str(pairs)],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    match = re.search(r": success in ([0-9.]+) s, ([0-9]+) task instances", done.stdout)
    if not match:
        raise SystemExit(f"DAG run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return float(match.group(1)), int(match.group(2))


def bare_work_seconds(pairs: int, store: Path) -> float:
    """The same refreshes and job processes, with no Airflow around them."""
    symbols = [f"SYN{i:04d}USDT" for i in range(pairs)]
    end = parse_time_ms(DATE)
    began = time.perf_counter()
    for symbol in symbols:
        refresh_pair(symbol, str(store), until_ms=end, history_days=365 + 16, source="synthetic")
        subprocess.run(
            [sys.executable, "-m", "backtest", "run", "--symbol", symbol, "--data-url", str(store)]
            + ["--start", "2025-11-01", "--end", DATE, "--window", "15d", "--results-url", str(store / "r")],
            check=True,
            capture_output=True,
            cwd=REPO,
        )
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, nargs="+", default=[10, 50])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "airflow"
        subprocess.run(
            [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
            env=airflow_env(home, Path(tmp)),
            check=True,
            capture_output=True,
        )
        print(
            f"{'pairs':>5} {'task instances':>14} {'DAG run (s)':>11} {'per pair (s)':>12} "
            f"{'bare work (s)':>13} {'overhead per task (s)':>21}"
        )
        for pairs in args.pairs:
            wall, tasks = dag_run_seconds(pairs, home, Path(tmp) / f"store-{pairs}")
            bare = bare_work_seconds(pairs, Path(tmp) / f"bare-{pairs}")
            print(
                f"{pairs:>5} {tasks:>14} {wall:>11.1f} {wall / pairs:>12.2f} {bare:>13.1f} "
                f"{(wall - bare) / tasks:>21.3f}"
            )


if __name__ == "__main__":
    main()
