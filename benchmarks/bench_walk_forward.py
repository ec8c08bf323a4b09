"""What does a walk-forward cost beside the plain grid? Cold processes, side by side.

    .venv/bin/python -m benchmarks.bench_walk_forward [--repeats 5]

Data: one pair, ~24,000 hourly bars: the real Binance BTCUSDT candles in
../shared/data/binance-spot-1h/ when present, else synthetic candles written to a temporary CSV
(the output says which). Grid: `sma_cross` fast = 24..240 step 24 x slow = 120..1440 step 24
(539 valid combinations), fee 10 bps.

Each command runs as a new process (`python -m backtest run ...`, cold start included), the runs
interleaved so that drift on a shared machine hits all alike; the figures are the median wall time
and the median CPU time (user + system, less sensitive to other load on a shared machine), beside
the process's peak RSS (CPU time and peak from wait4). Commands: the grid alone; the grid with
`--walk-forward 180d:30d` (rolling, about 27 folds, selecting by total_return); the same by sharpe;
anchored. In-process figures (job.backtest, no start-up) show the compute alone.
Target: walk-forward (rolling, total_return) at most 2x the grid's cold wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_engine import median_seconds, prepare_data, run_measured

GRID = ["--strategy", "sma_cross", "--param", "fast=24:240:24", "--param", "slow=120:1440:24", "--fee-bps", "10"]
WALK = "180d:30d"
TARGET_RATIO = 2.0


def in_process(symbol: str, path: Path, walk: str | None, select_by: str, repeats: int) -> float:
    """Median seconds of job.backtest in this process (candles read from the file each time)."""
    from backtest.job import RunSpec, backtest
    from backtest.simulation.walkforward import parse_walk_forward
    from backtest.strategy import grid_of

    grid = grid_of("sma_cross", {"fast": "24:240:24", "slow": "120:1440:24"})
    spec = RunSpec(
        symbol, grid, 10.0, input_url=str(path), select_by=select_by,
        walk_forward=parse_walk_forward(walk) if walk else None,
    )  # fmt: skip
    return median_seconds(lambda: backtest(spec), repeats)  # after one run that warms the caches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per command (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        symbol, description, path = prepare_data(Path(tmp))
        base = [sys.executable, "-m", "backtest", "run", "--symbol", symbol, "--input", str(path), *GRID]
        commands = {
            "grid": (base, None, "total_return"),
            f"walk-forward {WALK}": ([*base, "--walk-forward", WALK], WALK, "total_return"),
            f"walk-forward {WALK}, by sharpe": (
                [*base, "--walk-forward", WALK, "--select-by", "sharpe"], WALK, "sharpe"
            ),
            f"walk-forward {WALK}:anchored": (
                [*base, "--walk-forward", f"{WALK}:anchored"], f"{WALK}:anchored", "total_return"
            ),
        }  # fmt: skip
        print(f"data: {description}")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.repeats} interleaved cold runs each")
        results = {name: run_measured(cmd)[3] for name, (cmd, _, _) in commands.items()}  # warm-up run, kept for info
        wall: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        rss: dict[str, int] = dict.fromkeys(commands, 0)
        for _ in range(args.repeats):
            for name, (cmd, _, _) in commands.items():
                seconds, cpu_seconds, peak, _ = run_measured(cmd)
                wall[name].append(seconds)
                cpu[name].append(cpu_seconds)
                rss[name] = max(rss[name], peak // 2**20)  # MiB
        grid_result = json.loads(results["grid"])
        print(f"bars: {grid_result['bars']}, combinations: {grid_result['grid']['combinations']}")
        grid_cold, grid_cpu = statistics.median(wall["grid"]), statistics.median(cpu["grid"])
        print(
            f"\n  {'command':<34} {'folds':>5} {'cold wall':>10} {'x grid':>7} {'cold CPU':>9} {'x grid':>7} "
            f"{'peak RSS':>9} {'in-process':>11}"
        )
        verdicts = []
        for name, (_, walk, select_by) in commands.items():
            cold, cold_cpu = statistics.median(wall[name]), statistics.median(cpu[name])
            folds = len(json.loads(results[name])["walk_forward"]["folds"]) if walk else 0
            compute = in_process(symbol, path, walk, select_by, max(3, args.repeats // 2))
            print(
                f"  {name:<34} {folds or '-':>5} {cold:>8.3f} s {cold / grid_cold:>6.2f}x {cold_cpu:>7.3f} s "
                f"{cold_cpu / grid_cpu:>6.2f}x {rss[name]:>5} MiB {compute:>9.3f} s"
            )
            if name == f"walk-forward {WALK}":
                verdicts.append(cold / grid_cold <= TARGET_RATIO)
        print(
            f"\n  target: walk-forward {WALK} <= {TARGET_RATIO:g}x the grid (cold): {'PASS' if all(verdicts) else 'MISS'}"
        )


if __name__ == "__main__":
    main()
