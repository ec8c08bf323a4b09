"""What does the stronger look-ahead check cost? The cuts at every change of the signal against the
sampled cuts alone (the check before issue 20), in process.

    .venv/bin/python -m benchmarks.bench_lookahead [--repeats 3] [--skip-all]

Data: the real Binance BTCUSDT hourly candles in ../shared/data/binance-spot-1h/ (about 24,000
bars) when present, else as many synthetic candles (bench_engine.prepare_data); the output says
which. Every figure is `backtest.strategies.lookahead.check_grid` (truncation and warm-up checks,
both), timed with time.perf_counter, the median of --repeats runs after one untimed run:

1. each registered strategy (the built-ins and the project's strategies/) at its defaults on the
   real candles (`check-strategy NAME --input BTCUSDT.csv`): `old` the 60 sampled cuts alone
   (`at_changes=False`, the same code otherwise), `new` the 60 sampled cuts and every bar where the
   signal changes and the bar before it (the default); the cuts run by each.
2. the 539-combination sma_cross grid (fast 24..240 step 24 x slow 120..1440 step 24 bars) on the
   real candles: the check runs 12 of its combinations (MAX_COMBOS_CHECKED), old against new.
3. `plan`'s quick check (`backtest_airflow.run_strategies.lookahead_problems`: 12 sampled cuts
   and the changes, on synthetic candles, as plan runs it) for the DAG's default strategies
   (sma_trend alone) and for a run of every registered strategy at its defaults; old (12 sampled
   cuts alone) against new. Target: new under 1 s for a run's strategies.
4. unless --skip-all: `--cuts all` (every bar: the exhaustive check) for each registered
   strategy at its defaults on check-strategy's own synthetic candles (warm-up + max(warm-up,
   100) + 1,000 bars), one run each, against the default cuts there.

Exits 1 when plan's check of every registered strategy takes 1 s or more.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from backtest import strategy
from backtest.data.candles import read_candle_file
from backtest.data.storage import resolve
from backtest.strategies import lookahead
from backtest_airflow.run_strategies import LOOKAHEAD_CUTS, grid_of, lookahead_problems
from benchmarks.bench_engine import median_seconds, ms, prepare_data, print_table, verdict

FAST, SLOW = "24:240:24", "120:1440:24"  # bench_strategies' grid: 539 combinations
CLI_CUTS = lookahead.DEFAULT_CUTS
PLAN_TARGET_S = 1.0


def timed_check(grid, candles, cuts, at_changes: bool, repeats: int) -> tuple[float, dict]:
    """(median seconds, the last report) of check_grid on the given candles (None: synthetic)."""
    reports: list[dict] = []

    def once() -> None:
        reports.append(lookahead.check_grid(grid, candles, cuts=cuts, at_changes=at_changes))

    seconds = median_seconds(once, repeats)
    report = reports[-1]
    assert report["ok"], report.get("problem")
    return seconds, report


def seconds(value: float) -> str:
    return ms(value) if value < 1 else f"{value:,.2f} s"


def old_and_new(title: str, cases: dict, candles, cuts, repeats: int) -> None:
    rows = []
    for label, grid in cases.items():
        old_s, old = timed_check(grid, candles, cuts, False, repeats)
        new_s, new = timed_check(grid, candles, cuts, True, repeats)
        rows.append((label, seconds(old_s), seconds(new_s), f"{new_s / old_s:,.1f}x",
                     f"{old['cut_points']:,}", f"{new['cut_points']:,}"))  # fmt: skip
    print_rows(title, ("check", "old (sampled)", "new (+ changes)", "new/old", "cuts old", "cuts new"), rows)


def print_rows(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A table: the first column left-aligned, the others right-aligned."""
    print(f"\n{title}")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        print("  " + "  ".join(cells))


def plan_check(entries: list[dict], at_changes: bool) -> None:
    if at_changes:
        assert lookahead_problems(entries) == []
    else:  # the same check with the sampled cuts alone
        for entry in entries:
            assert lookahead.check_grid(grid_of(entry), cuts=LOOKAHEAD_CUTS, at_changes=False)["ok"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (default 3)")
    parser.add_argument("--skip-all", action="store_true", help="leave out the exhaustive --cuts all figures")
    args = parser.parse_args()

    names = strategy.names()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        _, description, csv_path = prepare_data(Path(tmp))
        candles = read_candle_file(resolve(str(csv_path)))
    print("look-ahead check benchmark: the cuts at the signal's changes against the sampled cuts alone")
    print(f"data:    {description}, {len(candles):,} bars")
    print(f"machine: CPython {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    print(f"figures: medians of {args.repeats} runs after one untimed run")

    defaults = {name: strategy.grid_of(name) for name in names}
    old_and_new(f"1. each strategy at its defaults, {CLI_CUTS} sampled cuts, real candles", defaults, candles,
                CLI_CUTS, args.repeats)  # fmt: skip
    grid = strategy.grid_of("sma_cross", {"fast": FAST, "slow": SLOW})
    label = f"sma_cross fast={FAST} slow={SLOW}: {len(grid.combos)} combinations, {len(lookahead.checked_combos(grid))} checked"
    old_and_new(f"2. the sma_cross grid, {CLI_CUTS} sampled cuts, real candles", {label: grid}, candles, CLI_CUTS,
                args.repeats)  # fmt: skip

    runs = {"the DAG's default (sma_trend)": [{"name": "sma_trend", "params": {}}],
            f"every registered strategy ({len(names)})": [{"name": name, "params": {}} for name in names]}  # fmt: skip
    rows = []
    ok = True
    for label, entries in runs.items():
        old_s = median_seconds(lambda entries=entries: plan_check(entries, False), args.repeats)
        new_s = median_seconds(lambda entries=entries: plan_check(entries, True), args.repeats)
        ok = ok and new_s < PLAN_TARGET_S
        rows.append((f"{label}: old", seconds(old_s), "", ""))
        rows.append((f"{label}: new", seconds(new_s), f"< {PLAN_TARGET_S:g} s", verdict(new_s < PLAN_TARGET_S)))
    print_table(f"3. plan's quick check ({LOOKAHEAD_CUTS} sampled cuts; synthetic candles), a run's strategies", rows)

    if not args.skip_all:
        rows = []
        for name, grid in defaults.items():
            default_s, default = timed_check(grid, None, CLI_CUTS, True, 1)
            start = time.perf_counter()
            report = lookahead.check_grid(grid, cuts=lookahead.ALL)
            all_s = time.perf_counter() - start
            assert report["ok"], report.get("problem")
            rows.append((name, f"{report['candles']:,}", seconds(default_s), f"{default['cut_points']:,}",
                         seconds(all_s), f"{report['cut_points']:,}"))  # fmt: skip
        title = "4. --cuts all (every bar) against the default cuts, check-strategy's synthetic candles, one run each"
        print_rows(title, ("strategy", "bars", "default", "cuts", "--cuts all", "cuts"), rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
