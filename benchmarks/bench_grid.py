"""The rank step with a large grid: the leaderboard and grid.parquet for 1,000 pairs x 539 combinations.

    .venv/bin/python -m benchmarks.bench_grid [--pairs 1000] [--days 365] [--holdout-days 30]

One real job result first: the issue's `sma_cross` grid (fast 1d..10d step 1d x slow 5d..60d step
1d: 539 valid combinations) backtested on synthetic candles (`--days` of them) as
`python -m backtest run` does it. That result JSON is then stored under `--pairs` symbols in a
run's `strategy=sma_cross/` folder (only the symbol differs), so the rank step reads `--pairs`
real-sized results (every float figure scaled by a random factor near 1 per pair, so that the
file's compression is not flattered by identical copies).

Each measurement runs in a fresh process (peak RSS is per process):
  a) `leaderboard.build(plan, {}, grid=False)`: read and rank only, the floor;
  b) `leaderboard.build(plan, {})`: the same plus grid.parquet (the rank step's default);
  c) queries on grid.parquet: read the whole file; a strategy's median sharpe per (fast, slow) over
     every pair; the report's heatmap read (3 pairs of one strategy, with a filter).
Reported: wall time (median and best of `--repeat` runs), the process's CPU time (median; steadier
than wall time on a shared machine), peak RSS, grid.parquet size, rows and row groups.

Measured here (2 cores shared with other work, load average about 3; 1,000 pairs x 539 = 539,000 rows):

    without a hold-out (0.25 MB per result JSON): rank only 3.5 s (CPU 3.5 s, peak 168 MiB);
      rank + grid.parquet 5.9 s (CPU 5.8 s, peak 281 MiB); grid.parquet 56.4 MB, 24 columns,
      9 row groups; reading it whole 0.16 s, median sharpe per (fast, slow) over every pair 0.08 s,
      the report's heatmap read (3 pairs, filtered) 0.03 s.
    with a 30-day hold-out (0.45 MB per result JSON): rank only 6.8 s (peak 162 MiB); rank +
      grid.parquet 10.9 s (peak 392 MiB); grid.parquet 103.2 MB, 37 columns; reading it 0.27 s.

So the grid file costs about 4.3 us a row (2.3 s for 539,000 rows, of which 0.8 s is zstd
Parquet encoding) on top of reading and parsing the JSON results, which the leaderboard does
anyway. The extra memory is the compressed file, built in memory before its atomic write
(`storage.write_bytes_atomic`), plus one row group (131,072 rows) being assembled.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from backtest.params import DAY_MS, parse_time_ms

GRID = {"fast": "1d:10d:1d", "slow": "5d:60d:1d"}


def make_results(root: Path, pairs: int, days: int, holdout_days: int) -> dict:
    """One real sma_cross grid result, stored for `pairs` symbols; returns the plan's arguments."""
    from backtest.data.store import CandleStore
    from backtest.data.synthetic import synthetic_candles
    from backtest.job import RunSpec, backtest, to_json
    from backtest.strategy import grid_of

    grid = grid_of("sma_cross", GRID)
    end = datetime(2026, 10, 1, tzinfo=UTC)
    start = end - timedelta(days=days)
    end_ms, start_ms = parse_time_ms(end.isoformat()), parse_time_ms(start.isoformat())
    store = str(root / "store")
    candles = synthetic_candles("BTCUSDT", start_ms - 70 * DAY_MS, end_ms)
    CandleStore(store).write("BTCUSDT", candles, "synthetic")
    spec = RunSpec("BTCUSDT", grid, 10.0, start_ms, end_ms, store, holdout_days=holdout_days, select_by="sharpe")
    began = time.perf_counter()
    result, _ = backtest(spec)
    job_seconds = time.perf_counter() - began
    results_url = str(root / "run")
    folder = root / "run" / "strategy=sma_cross"
    folder.mkdir(parents=True)
    symbols = [f"P{i:04d}USDT" for i in range(pairs)]
    rng = random.Random(7)
    for symbol in symbols:  # each pair's figures made distinct, so that compression gets no help from copies
        (folder / f"{symbol}.json").write_text(to_json(_varied({**result, "symbol": symbol}, rng)) + "\n")
    size = (folder / f"{symbols[0]}.json").stat().st_size
    return {
        "results_url": results_url,
        "pairs": symbols,
        "end": end.isoformat(),
        "days": days,
        "holdout_days": holdout_days,
        "combinations": len(grid.combos),
        "skipped": grid.skipped,
        "json_bytes": size,
        "job_seconds": job_seconds,
    }


def _varied(value, rng: random.Random):
    """A copy with every float figure scaled by a random factor near 1 (ints, text and params as they are)."""
    if isinstance(value, dict):
        return {k: v if k in ("params", "best") else _varied(v, rng) for k, v in value.items()}
    if isinstance(value, list):
        return [_varied(v, rng) for v in value]
    return value * (1 + rng.uniform(-0.05, 0.05)) if isinstance(value, float) else value


def plan_of(setup: dict):
    from backtest_airflow.planning import make_plan

    end = datetime.fromisoformat(setup["end"])
    params = {"pairs": setup["pairs"], "lookback_days": setup["days"], "rank_by": "sharpe"}
    if setup["holdout_days"]:
        params["holdout_days"] = setup["holdout_days"]
    plan = make_plan(params, "/unused", "dag", "run", end)
    return dataclasses.replace(
        plan, results_url=setup["results_url"], strategies=[{"name": "sma_cross", "params": GRID}]
    )


def measure(kind: str, setup: dict) -> dict:
    """One measurement in this process (called in a child process)."""
    import pyarrow.parquet as pq

    from backtest_airflow.report import grid_file, leaderboard

    plan = plan_of(setup)
    path = Path(setup["results_url"]) / "grid.parquet"
    began, cpu = time.perf_counter(), time.process_time()
    out: dict = {}
    if kind in ("rank", "rank+grid"):
        board = leaderboard.build(plan, {}, grid=kind == "rank+grid")
        out["ranked"] = int(board["rank"].notna().sum())
    elif kind == "read all":
        out["rows"] = pq.read_table(path).num_rows
    elif kind == "median sharpe per (fast, slow)":
        table = pq.read_table(path, columns=["strategy", "param_fast_bars", "param_slow_bars", "sharpe"],
                              filters=[("strategy", "==", "sma_cross")])  # fmt: skip
        grouped = table.group_by(["param_fast_bars", "param_slow_bars"]).aggregate([("sharpe", "approximate_median")])
        out["groups"] = grouped.num_rows
        best = grouped.sort_by([("sharpe_approximate_median", "descending")]).slice(0, 1).to_pylist()[0]
        out["best"] = f"fast {best['param_fast_bars']}, slow {best['param_slow_bars']}"
    elif kind == "heatmap read (3 pairs)":
        symbols = setup["pairs"][:3]
        table = grid_file.read_grid(
            setup["results_url"],
            ["symbol", "strategy", "best", "param_fast", "param_fast_bars", "param_slow", "param_slow_bars", "sharpe"],
            [("strategy", "==", "sma_cross"), ("symbol", "in", symbols)],
        )
        out["rows"] = len(table)
    out["seconds"], out["cpu"] = time.perf_counter() - began, time.process_time() - cpu
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def child(kind: str, setup_file: Path) -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_grid", "--child", kind, "--setup", str(setup_file)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--holdout-days", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, json.loads(Path(args.setup).read_text()))))
        return

    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup = make_results(root, args.pairs, args.days, args.holdout_days)
        setup_file = root / "setup.json"
        setup_file.write_text(json.dumps(setup))
        rows = args.pairs * setup["combinations"]
        print(
            f"{args.pairs} pairs x {setup['combinations']} sma_cross combinations ({setup['skipped']} skipped) = "
            f"{rows:,} grid rows; {args.days} days of hourly candles, hold-out {args.holdout_days} days; "
            f"one result JSON {setup['json_bytes'] / 1e6:.2f} MB (its job: {setup['job_seconds']:.1f} s)"
        )
        print(f"{'measurement':<34} {'median s':>9} {'min s':>7} {'CPU s':>7} {'peak MiB':>9}  notes")
        for kind in ("rank", "rank+grid", "read all", "median sharpe per (fast, slow)", "heatmap read (3 pairs)"):
            runs = [child(kind, setup_file) for _ in range(args.repeat)]
            seconds = [r["seconds"] for r in runs]
            notes = {k: v for k, v in runs[0].items() if k not in ("seconds", "cpu", "peak_mib")}
            peak, cpu = max(r["peak_mib"] for r in runs), statistics.median(r["cpu"] for r in runs)
            print(
                f"{kind:<34} {statistics.median(seconds):>9.2f} {min(seconds):>7.2f} {cpu:>7.2f} {peak:>9.0f}  {notes}"
            )
        grid = root / "run" / "grid.parquet"
        meta = pq.read_metadata(grid)
        print(
            f"grid.parquet: {grid.stat().st_size / 1e6:.1f} MB, {meta.num_rows:,} rows, {meta.num_columns} columns, "
            f"{meta.num_row_groups} row groups (zstd)"
        )


if __name__ == "__main__":
    main()
