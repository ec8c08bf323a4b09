"""How fast are shorts and stops? The 1,617-combination long/short sma_cross grid with stop-losses, ours against vectorbt.

    .venv/bin/python -m benchmarks.bench_execution [--cold-repeats 5] [--vbt-repeats 3] [--skip-vectorbt]

Data: the real Binance BTCUSDT hourly candles in ../shared/data/binance-spot-1h/ (23,988 bars).
Without them there is nothing to compare (the goal is stated on the real candles): it says so
and exits 0. Grid: sma_cross fast=1d:10d:1d x slow=5d:60d:1d (24..240 x 120..1440 bars: 539
valid combinations, 21 rejected with fast >= slow), `--direction long_short`, `--sl
0.03,0.06,0.1`: 539 x 3 = 1,617 combinations; fee 10 bps per side.

1. ours, cold: `python -m backtest run --symbol BTCUSDT --input CSV --strategy sma_cross --param
   fast=1d:10d:1d --param slow=5d:60d:1d --direction long_short --sl 0.03,0.06,0.1 --fee-bps 10`
   as a new process; wall time, CPU time (user + system) and peak RSS from os.wait4's rusage of
   exactly that process (bench_engine.run_measured).
2. vectorbt 1.2, cold: `vectorbt_reference.py --long-short --sl 0.03,0.06,0.1` in .venv-vectorbt/
   (bench_engine.ensure_vectorbt makes it): MA.run for the fast and the slow windows, targets
   +1 / -1 while SMA_fast is above / below SMA_slow, entries / short_entries / exits on the bar
   where the target of the previous bar changes (filled at that bar's open: `price=open`),
   `upon_opposite_entry='reverse'`, `sl_stop` per column (3 levels x 539 = 1,617 columns),
   open/high/low/close given, fees 0.001, init_cash 1; its total returns and positions.
   Both run interleaved after one untimed run each (page cache, byte code, numba's cache; the
   untimed vectorbt run also saves its signals and positions for 3.).
   Goals: ours <= 0.1x vectorbt's wall time, our peak RSS <= 400 MB (MB = 10^6 bytes).
3. Cross-check: our targets (job.signal_blocks) against vectorbt's, and the entries, short
   entries and exits implied by ours (engine.desired_positions) against vectorbt's, bar by bar
   in every column (expected: 0 bars differ). Without stops (the same grid, no --sl), our trades
   (entry bar, exit bar, side) against vectorbt's positions, and our final equity recomputed from
   vectorbt's fill prices by our accounting (expected: identical, to 1e-9). With stops the two
   differ by design: reported, not asserted (the output says why).
4. Where our time goes, in process, through the job's own functions: loading the CSV, signals,
   the simulation (Segment.run -> fills.simulate_trades), metrics (compute_metrics_block), the
   whole job.backtest and its JSON, wall and CPU ms; the start-up and imports of a cold process;
   and cProfile's functions with the most own time.

Exits 1 when a goal is missed, a figure could not be measured or the signal or no-stop
cross-check fails.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from backtest import job
from backtest.data.candles import Candles, read_candle_file
from backtest.data.storage import resolve
from backtest.simulation.engine import Segment, desired_positions
from backtest.simulation.execution import Combinations, ExecutionGrid, parse_execution
from backtest.simulation.metrics import compute_metrics_block
from backtest.simulation.trades import KIND_CODES, Simulation
from backtest.strategy import Grid, grid_of
from benchmarks.bench_engine import SHARED_DATA, SYMBOL, VBT_SCRIPT, ensure_vectorbt, vectorbt_options, verdict
from benchmarks.bench_strategies import ColdRuns, cold_runs, load_text, seconds_text

FEE_BPS = 10.0
FAST, SLOW = "1d:10d:1d", "5d:60d:1d"
DIRECTION = "long_short"
SL = "0.03,0.06,0.1"
FAST_BARS, SLOW_BARS = "24:240:24", "120:1440:24"  # the same windows in bars, for vectorbt_reference.py
CSV_NAME = f"binance_spot_{SYMBOL}_1h_misrori.csv"
TARGET_VBT_RATIO = 0.1
TARGET_PEAK_MB = 400.0
EQUITY_TOLERANCE = 1e-9  # relative: our final equity vs the same recomputed from vectorbt's fills
PROFILE_LINES = 8

Row = tuple[str, ...]


def print_rows(title: str, header: Row, rows: list[Row]) -> None:
    """bench_engine.print_table's layout, for any number of columns (the first left-aligned)."""
    print(f"\n{title}")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))]
        print(("  " + "  ".join(cells)).rstrip())


# -- 1. and 2.: cold processes ----------------------------------------------------------------


def side_by_side(ours: ColdRuns, imports: ColdRuns, theirs: ColdRuns | None, version: str, k: int) -> bool:
    """The table of 1.-2.; True when both goals are met."""
    peak_ok = ours.peak_mb <= TARGET_PEAK_MB
    rows: list[Row] = []
    if theirs is not None:
        rows += [
            (f"vectorbt {version}: wall, median of {len(theirs.seconds)}", seconds_text(theirs.seconds), "", ""),
            ("   CPU time (user + system), median", f"{statistics.median(theirs.cpu_seconds):.2f} s", "", ""),
            ("   peak RSS (largest timed run)", f"{theirs.peak_mb:,.0f} MB", "", ""),
            ("   per combination", f"{theirs.median / k * 1e3:.2f} ms", "", ""),
        ]
    rows += [
        (f"ours: wall, median of {len(ours.seconds)}", seconds_text(ours.seconds), "", ""),
        ("   CPU time (user + system), median", f"{statistics.median(ours.cpu_seconds):.2f} s", "", ""),
        ("   peak RSS (largest run)", f"{ours.peak_mb:,.0f} MB", f"<= {TARGET_PEAK_MB:g} MB", verdict(peak_ok)),
        ("   per combination", f"{ours.median / k * 1e3:.2f} ms", "", ""),
        ("   of which start-up + imports (wall, median)", seconds_text(imports.seconds), "", ""),
    ]
    ok = peak_ok
    if theirs is not None:
        ratio = ours.median / theirs.median
        cpu_ratio = statistics.median(ours.cpu_seconds) / statistics.median(theirs.cpu_seconds)
        ok &= ratio <= TARGET_VBT_RATIO
        rows += [
            ("ours / vectorbt, wall time", f"{ratio:.3f} (1/{1 / ratio:.1f})", f"<= {TARGET_VBT_RATIO:g}",
             verdict(ratio <= TARGET_VBT_RATIO)),
            ("ours / vectorbt, CPU time", f"{cpu_ratio:.3f} (1/{1 / cpu_ratio:.1f})", "", ""),
            ("ours / vectorbt, peak RSS", f"{ours.peak_mb / theirs.peak_mb:.3f}", "", ""),
        ]  # fmt: skip
    else:
        rows.append(("ours / vectorbt, wall time", "not measured", f"<= {TARGET_VBT_RATIO:g}", "MISS"))
        ok = False
    print_rows(f"1.-2. side by side, {k:,} combinations, cold processes (MB = 10^6 bytes)",
               ("measure", "median", "target", ""), rows)  # fmt: skip
    return ok


# -- 3.: cross-check --------------------------------------------------------------------------


def simulate_grid(candles: Candles, grid: Grid, execution: ExecutionGrid, targets: np.ndarray) -> Simulation:
    """Every combination of `grid` x `execution` over all bars, as the job runs them: each target row
    with each execution (combination i * E + e)."""
    return Segment.of(candles, 0, len(candles)).run(targets, FEE_BPS / 10_000, execution.executions)


def implied_signals(targets: np.ndarray, direction: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(entries, short entries, exits), (rows, bars) bool, where our engine's d changes."""
    d = desired_positions(targets, 0, targets.shape[1], direction)
    changed = np.zeros(d.shape, dtype=bool)
    changed[:, 0] = d[:, 0] != 0
    np.not_equal(d[:, 1:], d[:, :-1], out=changed[:, 1:])
    return changed & (d == 1), changed & (d == -1), changed & (d == 0)


def vbt_trades(check: dict, prefix: str) -> dict[str, np.ndarray]:
    """vectorbt's positions as ours: row, entry, exit (-1: open), side (+1 / -1), prices."""
    fields = {name: check[f"{prefix}_{name}"] for name in ("col", "entry_idx", "exit_idx", "entry_price", "exit_price")}
    open_ = check[f"{prefix}_status"] == 0
    return {
        "row": fields["col"],
        "entry": fields["entry_idx"],
        "exit": np.where(open_, -1, fields["exit_idx"]),
        "side": np.where(check[f"{prefix}_direction"] == 0, 1, -1),
        "entry_price": fields["entry_price"],
        "exit_price": fields["exit_price"],
        "open": open_,
    }


def trade_keys(row: np.ndarray, entry: np.ndarray, exit_: np.ndarray, side: np.ndarray) -> np.ndarray:
    return ((row.astype(np.int64) * 100_000 + entry) * 100_001 + exit_ + 1) * 2 + (side > 0)


def equity_from_fills(theirs: dict[str, np.ndarray], last_close: float, fee: float, k: int) -> np.ndarray:
    """Final equity of each of k columns by our accounting (rule 6, size 1, no borrow) from
    vectorbt's entry and exit prices: a long closed at P_x gives (P_x/P_e)(1-f)^2, a short
    (2-f) - P_x/(P_e(1-f)); still open at the last close c: (c/P_e)(1-f), and (2-f) - c/P_e."""
    pe, px, long_, open_ = theirs["entry_price"], theirs["exit_price"], theirs["side"] > 0, theirs["open"]
    px = np.where(open_, last_close, px)
    keep = 1.0 - fee
    factor = np.where(
        long_,
        (px / pe) * np.where(open_, keep, keep * keep),
        (2.0 - fee) - np.where(open_, px / pe, px / (pe * keep)),
    )
    rows = theirs["row"]
    equity = np.ones(k)
    if len(rows):
        present = np.unique(rows)
        equity[present] = np.multiply.reduceat(factor, np.searchsorted(rows, present))
    return equity


def compare_trades(sim: Simulation, theirs: dict[str, np.ndarray], k: int) -> tuple[np.ndarray, int, int, int]:
    """(columns whose trade lists are identical, trades in both, only ours, only vectorbt's)."""
    log = sim.log
    ours_keys = trade_keys(log.row, log.entry, np.where(log.exit < 0, -1, log.exit), log.side)
    their_keys = trade_keys(theirs["row"], theirs["entry"], theirs["exit"], theirs["side"])
    only_ours, only_theirs = ~np.isin(ours_keys, their_keys), ~np.isin(their_keys, ours_keys)
    same = np.ones(k, dtype=bool)
    same[log.row[only_ours]] = False
    same[theirs["row"][only_theirs]] = False
    return same, int(np.sum(~only_ours)), int(np.sum(only_ours)), int(np.sum(only_theirs))


def cross_check(candles: Candles, grid: Grid, cli: dict, vbt: dict, check: dict) -> bool:
    """3.: signals in every column, the no-stop trades and equity, the stop-loss differences."""
    fee = FEE_BPS / 10_000
    n = len(candles)
    stops = parse_execution(DIRECTION, sl=SL)
    ours_targets = np.concatenate([s for _, s in job.signal_blocks(grid.strategy, candles, grid.combos, 0)])
    combos = [[c["fast"], c["slow"], e.sl] for c in grid.combos for e in stops.executions]
    print(f"\n3. cross-check, ours (in process, the job's functions) against vectorbt {vbt['vectorbt_version']}")
    problems = []
    if vbt["combinations"] != combos:
        problems.append("the columns differ from our combinations (order: fast, slow, sl)")

    target_bars = int(np.sum(ours_targets != check["targets"]))
    expanded = np.repeat(ours_targets, len(stops.executions), axis=0)  # combination i * E + e: row i
    differing_bars, differing_columns = 0, np.zeros(len(expanded), dtype=bool)
    for name, mine in zip(("entries", "short_entries", "exits"), implied_signals(expanded, DIRECTION), strict=True):
        other = np.unpackbits(check[name], axis=1, count=n).astype(bool)
        diff = mine != other
        differing_bars += int(diff.sum())
        differing_columns |= diff.any(axis=1)
    print(
        f"   signals: targets of {len(ours_targets)} combinations x {n:,} bars differ on {target_bars} bars; "
        f"entries, short entries and exits of {len(expanded):,} columns differ on {differing_bars} bars "
        f"({int(differing_columns.sum())} columns): {'AGREE' if target_bars + differing_bars == 0 else 'DISAGREE'}"
    )
    if target_bars or differing_bars:
        problems.append("the signals differ")

    # Without stops: the same grid, one column per combination.
    plain_sim = simulate_grid(candles, grid, parse_execution(DIRECTION), ours_targets)
    k = len(plain_sim.equity)
    theirs = vbt_trades(check, "plain")
    same, both, only_ours, only_theirs = compare_trades(plain_sim, theirs, k)
    predicted = equity_from_fills(theirs, float(candles.close[-1]), fee, k)
    ours_equity = plain_sim.equity[:, -1]
    residual = float(np.max(np.abs(ours_equity / predicted - 1)))
    raw = ours_equity - (1 + check["plain_total_return"])
    ok_plain = only_ours == 0 and only_theirs == 0 and residual <= EQUITY_TOLERANCE
    print(
        f"   no stops ({k} combinations, {len(plain_sim.log.row):,} trades of ours, {len(theirs['row']):,} of vectorbt):"
    )
    print(
        f"     trades (entry bar, exit bar, side) in both {both:,}, only ours {only_ours}, only vectorbt's {only_theirs}"
    )
    print(
        f"     our final equity vs the same recomputed from vectorbt's fill prices by our accounting: max relative "
        f"{residual:.1e}: {'AGREE' if ok_plain else 'DISAGREE'}"
    )
    print(
        f"     raw total return, ours - vectorbt's: median {np.median(raw):+.2e}, range {raw.min():+.2e}..{raw.max():+.2e}"
        " (the fee and short conventions, below)"
    )
    if not ok_plain:
        problems.append("the no-stop trades or equity differ")

    # With stops: reported, not asserted.
    stop_sim = simulate_grid(candles, grid, stops, ours_targets)
    k = len(stop_sim.equity)
    theirs = vbt_trades(check, "stop")
    same, both, only_ours, only_theirs = compare_trades(stop_sim, theirs, k)
    predicted = equity_from_fills(theirs, float(candles.close[-1]), fee, k)
    ours_equity = stop_sim.equity[:, -1]
    residual_same = float(np.max(np.abs(ours_equity[same] / predicted[same] - 1))) if same.any() else float("nan")
    cli_returns = np.array([row["total_return"] for row in cli["sweep"]])
    cli_same = bool(np.array_equal(cli_returns, ours_equity - 1))
    log = stop_sim.log
    on_entry_bar = int(np.sum((log.kind == KIND_CODES["stop"]) & (log.exit == log.entry)))
    diff = ours_equity - (1 + np.asarray(vbt["total_return"]))
    ours_trades = np.array([row["trades"] for row in cli["sweep"]])
    their_trades = np.asarray(vbt["long_trades"]) + np.asarray(vbt["short_trades"])
    ours_stops = int(np.sum(log.kind == KIND_CODES["stop"]))
    print(f"   with stops ({k:,} columns; our CLI's total returns equal the in-process ones: {cli_same}):")
    print(f"     trades: ours {int(ours_trades.sum()):,} ({ours_stops:,} stop exits), vectorbt {int(their_trades.sum()):,}; "
          f"columns with the same count {int(np.sum(ours_trades == their_trades)):,}")  # fmt: skip
    print(
        f"     trades (entry bar, exit bar, side) in both {both:,}, only ours {only_ours}, only vectorbt's {only_theirs}"
    )
    print(f"     columns whose trade lists are identical: {int(same.sum()):,}; there our final equity vs the same "
          f"recomputed from vectorbt's fill prices: max relative {residual_same:.1e}")  # fmt: skip
    print(f"     our stops that fire on their entry bar: {on_entry_bar}; entries vectorbt skips: "
          f"{int(ours_trades.sum() - their_trades.sum())}")  # fmt: skip
    print(f"     total return, ours - vectorbt's: median {np.median(diff):+.2e}, range {diff.min():+.2e}..{diff.max():+.2e}; "
          f"|difference| > 1e-2 in {int(np.sum(np.abs(diff) > 1e-2))} columns")  # fmt: skip
    print(
        "   Why they differ. Fees: vectorbt adds the fee on top of a buy (cash/(1+f) buys), ours invests (1-f) of\n"
        "   the cash: a long's equity differs by the factor 1 - f^2; a short opened with all cash is A/P units in\n"
        "   ours (debt repaid at P_x/(1-f)), A/(P(1+f)) in vectorbt. Stops (vectorbt given stop_entry_price='price',\n"
        "   so both measure the stop from the entry bar's open and fill at min(open, level) for a long): vectorbt\n"
        "   checks a stop only from the bar after the entry, ours from the entry bar itself (its range comes after\n"
        "   its open); and on a bar where the signal changes and the stop is hit, vectorbt's stop comes first and\n"
        "   that bar's new entry (a reversal) is dropped, while ours closes at the open and opens the new trade.\n"
        "   Where the trade lists agree, the fills agree (the recomputed equity above)."
    )
    if problems:
        print("   " + "; ".join(problems))
    return not problems


# -- 4.: where our time goes ------------------------------------------------------------------


def split_once(csv_path: Path, grid: Grid, execution: ExecutionGrid) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds per stage of one run, job.backtest's own loop taken apart."""
    fee = FEE_BPS / 10_000
    stages = ("load", "signals", "desired", "simulation", "metrics")
    wall, cpu = dict.fromkeys(stages, 0.0), dict.fromkeys(stages, 0.0)

    def timed(stage: str, fn):
        w, c = time.perf_counter(), time.process_time()
        value = fn()
        wall[stage] += time.perf_counter() - w
        cpu[stage] += time.process_time() - c
        return value

    combos = Combinations(grid, execution.executions)
    per_combo = len(combos.executions)
    candles = timed("load", lambda: read_candle_file(resolve(str(csv_path))))
    segment = timed("load", lambda: Segment.of(candles, 0, len(candles)))
    blocks = job.signal_blocks(grid.strategy, candles, grid.combos, segment.first, per_combo)
    n, close = segment.stop - segment.first, segment.candles.close
    while (item := timed("signals", lambda: next(blocks, None))) is not None:
        targets, executions = item[1], combos.executions  # the engine runs each row with each execution
        timed("desired", lambda t=targets: desired_positions(t, segment.first, n, execution.direction))
        sim = timed("simulation", lambda t=targets, e=executions: segment.run(t, fee, e))
        timed("metrics", lambda s=sim: compute_metrics_block(s.equity, s.position, close, segment.gaps, s.counts()))
    return {stage: (wall[stage], cpu[stage]) for stage in stages}


def in_process_split(spec: job.RunSpec, csv_path: Path, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of each stage, of the whole job.backtest and of its JSON."""
    samples: dict[str, list[tuple[float, float]]] = {}
    job.backtest(spec)  # warm-up
    for _ in range(repeats):
        for stage, value in split_once(csv_path, spec.grid, spec.execution).items():
            samples.setdefault(stage, []).append(value)
        w, c = time.perf_counter(), time.process_time()
        result, _ = job.backtest(spec)
        samples.setdefault("backtest", []).append((time.perf_counter() - w, time.process_time() - c))
        w, c = time.perf_counter(), time.process_time()
        job.to_json(result)
        samples.setdefault("json", []).append((time.perf_counter() - w, time.process_time() - c))
    return {
        stage: (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))
        for stage, values in samples.items()
    }


def profile_top(spec: job.RunSpec, lines: int) -> list[Row]:
    """cProfile of one job.backtest: the functions with the most own time."""
    profiler = cProfile.Profile()
    profiler.runcall(job.backtest, spec)
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    entries = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
    total = sum(value[2] for _, value in entries)
    for (filename, line, name), (_, calls, own, cumulative, _) in entries[:lines]:
        where = name if filename == "~" else f"{Path(filename).name}:{line} {name}"
        rows.append((where[:90], f"{calls:,}", f"{own * 1e3:,.1f}", f"{cumulative * 1e3:,.1f}", f"{own / total:.0%}"))
    return rows


def print_split(
    split: dict[str, tuple[float, float]], imports: ColdRuns, ours: ColdRuns, k: int, bars: int, repeats: int
) -> None:
    def cells(stage: str) -> tuple[str, str]:
        wall, cpu = split[stage]
        return f"{wall * 1e3:,.1f}", f"{cpu * 1e3:,.1f}"

    levels = len(SL.split(","))
    per_block = max(1, job.BLOCK_CELLS // (bars * levels))  # as job.signal_blocks sizes them
    compute_wall = sum(split[s][0] for s in ("signals", "simulation", "metrics"))
    compute_cpu = sum(split[s][1] for s in ("signals", "simulation", "metrics"))
    imports_wall, imports_cpu = statistics.median(imports.seconds), statistics.median(imports.cpu_seconds)
    total_wall = imports_wall + split["backtest"][0] + split["json"][0]
    total_cpu = imports_cpu + split["backtest"][1] + split["json"][1]
    rows: list[Row] = [
        (f"cold: start-up + imports (median of {len(imports.seconds)})", f"{imports_wall * 1e3:,.1f}",
         f"{imports_cpu * 1e3:,.1f}"),
        ("load the CSV (read_candle_file, Segment.of)", *cells("load")),
        (f"signals (job.signal_blocks: {-(-k // levels // per_block)} blocks of <= {per_block})", *cells("signals")),
        ("simulation (Segment.run -> fills.simulate_trades)", *cells("simulation")),
        ("   of which desired positions (engine.desired_positions)", *cells("desired")),
        ("metrics (compute_metrics_block)", *cells("metrics")),
        (f"   signals + simulation + metrics, per combination (of {k:,})", f"{compute_wall / k * 1e3:.3f}",
         f"{compute_cpu / k * 1e3:.3f}"),
        ("job.backtest as a whole (the above and the result dict)", *cells("backtest")),
        ("JSON of the result (job.to_json)", *cells("json")),
        ("   start-up + job.backtest + JSON", f"{total_wall * 1e3:,.1f}", f"{total_cpu * 1e3:,.1f}"),
        ("cold `python -m backtest run` (section 1)", f"{ours.median * 1e3:,.1f}",
         f"{statistics.median(ours.cpu_seconds) * 1e3:,.1f}"),
    ]  # fmt: skip
    print_rows(f"4. where our time goes, in process, median of {repeats} (ms)", ("stage", "wall", "CPU"), rows)


# -- main -------------------------------------------------------------------------------------


def main() -> int:
    skip = "leave vectorbt out (exits 1: ratio unchecked)"
    args = vectorbt_options(__doc__, repeats=5, cold_repeats=5, vbt_repeats=3, skip=skip)
    csv_path = SHARED_DATA / CSV_NAME
    if not csv_path.is_file():
        print(f"bench_execution: SKIPPED: the real candles {csv_path} are not here (../shared relative to the repo)")
        return 0

    grid = grid_of("sma_cross", {"fast": FAST, "slow": SLOW})
    execution = parse_execution(DIRECTION, sl=SL)
    k = len(grid.combos) * len(execution.executions)
    candles = read_candle_file(resolve(str(csv_path)))
    print("execution benchmark: sma_cross long/short with stop-losses, ours against vectorbt")
    print(f"data:    REAL Binance {SYMBOL} 1h candles: {csv_path}, {len(candles):,} bars")
    print(f"grid:    fast={FAST} x slow={SLOW}: {len(grid.combos)} combinations ({grid.skipped} rejected) x "
          f"--sl {SL} = {k:,}; --direction {DIRECTION}; fee {FEE_BPS:g} bps")  # fmt: skip
    print(f"machine: CPython {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        ours_cmd = [sys.executable, "-m", "backtest", "run", "--symbol", SYMBOL, "--input", str(csv_path),
                    "--strategy", "sma_cross", "--param", f"fast={FAST}", "--param", f"slow={SLOW}",
                    "--direction", DIRECTION, "--sl", SL, "--fee-bps", f"{FEE_BPS:g}"]  # fmt: skip
        imports_cmd = [sys.executable, "-c", "from backtest import job, strategy; strategy.load_strategies()"]
        runs = [ColdRuns("ours", ours_cmd, dict(os.environ)), ColdRuns("imports", imports_cmd, dict(os.environ))]
        repeats = {"ours": args.cold_repeats, "imports": args.cold_repeats}
        vbt_python = None if args.skip_vectorbt else ensure_vectorbt()
        check_path = Path(tmp) / "vbt_check.npz"
        if vbt_python:
            levels = ",".join(f"{e.sl:g}" for e in execution.executions)
            vbt_cmd = [vbt_python, str(VBT_SCRIPT), "--input", str(csv_path), "--fast", FAST_BARS,
                       "--slow", SLOW_BARS, "--long-short", "--sl", levels, "--fee-bps", f"{FEE_BPS:g}"]  # fmt: skip
            vbt_env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
            runs.append(ColdRuns("vectorbt", vbt_cmd, vbt_env, [*vbt_cmd, "--check-out", str(check_path)]))
            repeats["vectorbt"] = args.vbt_repeats

        print(f"\n1.-2. cold processes (one untimed run each, then interleaved); before: {load_text()}", flush=True)
        cold_runs(runs, repeats)
        print(f"   after: {load_text()}")
        cli = json.loads(runs[0].first_stdout)
        if cli["grid"]["combinations"] != k:
            raise SystemExit(f"the CLI ran {cli['grid']}, not {k} combinations")
        theirs = runs[2] if vbt_python else None
        vbt = json.loads(theirs.first_stdout) if theirs else None
        goals = side_by_side(runs[0], runs[1], theirs, vbt["vectorbt_version"] if vbt else "", k)
        agrees = False
        if vbt is not None:
            with np.load(check_path) as npz:
                check = dict(npz)
            agrees = cross_check(candles, grid, cli, vbt, check)
        else:
            print("\n3. cross-check: skipped (no vectorbt)")

    spec = job.RunSpec(symbol=SYMBOL, grid=grid, fee_bps=FEE_BPS, input_url=str(csv_path), execution=execution)
    print(f"\n   in process, before: {load_text()}", flush=True)
    split = in_process_split(spec, csv_path, args.repeats)
    print_split(split, runs[1], runs[0], k, len(candles), args.repeats)
    print_rows(f"   cProfile of one job.backtest: the {PROFILE_LINES} functions with the most own time",
               ("function", "calls", "own ms", "cum ms", "share"), profile_top(spec, PROFILE_LINES))  # fmt: skip
    print(f"   after: {load_text()}")
    print(f"\ngoals (wall <= {TARGET_VBT_RATIO:g}x vectorbt, peak <= {TARGET_PEAK_MB:g} MB): "
          f"{'all met' if goals else 'MISSED (see 1.-2.)'}; signal and no-stop cross-check: "
          f"{'AGREE' if agrees else 'FAILED or not run (see 3.)'}")  # fmt: skip
    return 0 if goals and agrees else 1


if __name__ == "__main__":
    raise SystemExit(main())
