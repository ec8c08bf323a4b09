"""`make demo`: the whole daily DAG once, locally, on the embedded default (no AWS, no internet).

Local store, synthetic candles (labelled as such), local runner, the configured pairs, one
logical date; prints the leaderboard and the paths of its files. Runs under `dag.test()` with
its own AIRFLOW_HOME and SQLite metadata DB (the Makefile sets the environment).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from backtest_airflow import layout

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun


def quiet_third_party_warnings() -> None:
    """Deprecation notices of libraries (pathspec, starlette, SQLAlchemy) are noise in the demo's output."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    warnings.filterwarnings("ignore", message="Multiple rows returned with uselist=False")


class DagImportError(RuntimeError):
    """The DAG folder did not import cleanly."""


def run_demo(
    date: str = "2026-11-01",
    pairs: int = 0,
    window: str | None = None,
    lookback_days: int | None = None,
    strategies: list[dict] | None = None,
    walk_forward: str | None = None,
) -> tuple[DagRun, Path, float]:
    """One run of the daily DAG under dag.test() in this process, with the environment's settings
    (AIRFLOW_HOME, BACKTEST_DATA_URL, ...): (the DAG run, its results folder, seconds dag.test took).

    Migrates the metadata DB first; `pairs` > 0 backtests that many synthetic pairs instead of the
    configured list; `window`, `lookback_days`, `strategies` and `walk_forward` override those params."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, stdout=subprocess.DEVNULL)

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise DagImportError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag(layout.DAG_ID)
    overrides = {
        "pairs": [f"SYN{i:04d}USDT" for i in range(pairs)],
        "window": window,
        "lookback_days": lookback_days,
        "strategies": strategies,
        "walk_forward": walk_forward,
    }
    conf = {name: value for name, value in overrides.items() if value}  # the params given, no others
    quiet_third_party_warnings()  # after Airflow's imports, which install filters of their own
    began = time.perf_counter()
    logical_date = datetime.fromisoformat(date + "T00:00:00+00:00")
    dag_run = dag.test(logical_date=logical_date, run_conf=conf)
    elapsed = time.perf_counter() - began
    return dag_run, Path(layout.results_url(os.environ["BACKTEST_DATA_URL"], date, dag_run.run_id)), elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--date", default="2026-11-01", help="logical date of the run (default 2026-11-01)")
    parser.add_argument("--pairs", type=int, default=0, help="use this many synthetic pairs instead of the list")
    parser.add_argument("--window", help="override the window param (e.g. 15d, or a sweep 1d:60d:1d)")
    parser.add_argument("--lookback-days", type=int, help="override the lookback_days param")
    parser.add_argument(
        "--strategies",
        type=json.loads,
        help='override the strategies param, as JSON: \'[{"name": "sma_cross", "params": {"fast": "1d,2d"}}]\'',
    )
    parser.add_argument("--walk-forward", help="set the walk_forward param, e.g. 60d:20d or 60d:20d:anchored")
    args = parser.parse_args()
    try:
        dag_run, folder, elapsed = run_demo(
            args.date, args.pairs, args.window, args.lookback_days, args.strategies, args.walk_forward
        )
    except DagImportError as error:
        print(error, file=sys.stderr)
        return 1

    print()
    if (folder / layout.LEADERBOARD_MD).exists():
        print((folder / layout.LEADERBOARD_MD).read_text())
        for name in layout.RANK_FILES:
            print(f"{name}: {folder / name}")
    else:
        print(f"no leaderboard was written (expected in {folder}): see the task errors above", file=sys.stderr)
    tasks = len(dag_run.get_task_instances())
    print(f"DAG run {dag_run.run_id}: {dag_run.state} in {elapsed:.1f} s, {tasks} task instances (SYNTHETIC data)")
    return 0 if dag_run.state == "success" else 1


if __name__ == "__main__":
    raise SystemExit(main())
