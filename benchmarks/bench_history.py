"""Reading the run history in `rank`: 1,000 pairs x 30 dates of leaderboards.

    .venv/bin/python -m benchmarks.bench_history [--pairs 1000] [--dates 30]

Writes a store of synthetic leaderboards (every column the real leaderboard has, values random,
one successful run per date with its `_latest.json` pointer, plus a failed run on every fifth
date that must be skipped), then, in a fresh process, times what `rank` does with the history:
the previous run's leaderboard and the changes against it (`history.changes`), and the last 30
runs' ranking metric and position for every pair (`history.read_history`). Reports wall time
and the process's peak RSS (goal: under 2 s and 300 MB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from backtest_airflow import layout
from backtest_airflow.report import history
from backtest_airflow.report.leaderboard import COLUMNS

METRIC = "total_return"


def write_store(root: Path, pairs: int, dates: int) -> tuple[str, str]:
    """The store's URL and its last date."""
    data_url = str(root / "store")
    rng = np.random.default_rng(7)
    symbols = [f"SYN{i:04d}USDT" for i in range(pairs)]
    first = date(2026, 11, 1)
    for d in range(dates):
        day = (first + timedelta(days=d)).isoformat()
        runs = [("scheduled", True)] + ([("failed-rerun", False)] if d % 5 == 4 else [])
        for run_id, ok in runs:
            board = pd.DataFrame({c: rng.normal(size=pairs) for c in COLUMNS})
            board["symbol"], board["strategy"], board["status"] = symbols, "sma_trend", "ok"
            board["rank"] = pd.array(rng.permutation(pairs) + 1, dtype="Int64")
            board["position_now"] = rng.choice(["long", "flat", "short"], size=pairs)
            board["next_params"] = rng.choice(["window=1d", "window=5d", "window=15d"], size=pairs)
            for text in ("params", "selection", "final_position", "position_since", "select_by", "data_source",
                         "first_bar", "last_bar", "split", "start", "end", "wf_last_params", "direction"):  # fmt: skip
                board[text] = "x"
            folder = Path(layout.results_url(data_url, day, run_id))
            folder.mkdir(parents=True)
            board.to_parquet(folder / layout.LEADERBOARD_PARQUET)
            if ok:
                history.write_pointer(data_url, day, run_id)
    return data_url, (first + timedelta(days=dates - 1)).isoformat()


def read(data_url: str, until: str) -> dict:
    began = time.perf_counter()
    current = history.read_leaderboard(history.latest_runs(data_url, until, 1)[0].results_url)
    previous_ref = history.previous_run(data_url, until)
    previous = history.read_leaderboard(previous_ref.results_url)
    board, _ = history.changes(current, previous, METRIC)
    frame = history.read_history(data_url, until, ["symbol", "strategy", "rank", METRIC, "position_now"])
    seconds = time.perf_counter() - began
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": round(seconds, 3), "peak_rss_mb": round(rss_mb, 1), "history_rows": len(frame),
            "changed_positions": int((board["position_prev"] != board["position_now"]).sum())}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--dates", type=int, default=30)
    parser.add_argument("--read", nargs=2, metavar=("DATA_URL", "UNTIL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        print(json.dumps(read(*args.read)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        data_url, until = write_store(Path(tmp), args.pairs, args.dates)
        command = [sys.executable, "-m", "benchmarks.bench_history", "--read", data_url, until]
        figures = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    ok = figures["seconds"] < 2 and figures["peak_rss_mb"] < 300
    print(f"{args.pairs} pairs x {args.dates} dates: {figures} -> {'PASS' if ok else 'MISS'} (goal < 2 s, < 300 MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
