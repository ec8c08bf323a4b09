"""How fast is a strategy grid? A 539-combination sma_cross grid, ours against vectorbt, cold processes.

    .venv/bin/python -m benchmarks.bench_strategies [--cold-repeats 7] [--vbt-repeats 5] [--skip-vectorbt]

Data: the real Binance BTCUSDT hourly candles in ../shared/data/binance-spot-1h/ (about 24,000
bars) when present, else as many synthetic candles (bench_engine.prepare_data); the output says
which. Fee 10 bps per side. Grid: sma_cross, fast 24..240 step 24 x slow 120..1440 step 24 bars:
539 valid combinations, 21 rejected (fast >= slow).

1. ours, cold: `python -m backtest run --input CSV --strategy sma_cross --param fast=24:240:24
   --param slow=120:1440:24 --fee-bps 10` as a new process: wall time (median), CPU time (user +
   system: less sensitive to other work on a shared machine) and peak RSS (the largest of the
   runs), each from os.wait4's rusage of exactly that process.
2. vectorbt, cold: the same grid with `vectorbt_reference.py --fast --slow` (MA.run for the fast
   and the slow windows, `ma_above` as a 539-column signal frame, Portfolio.from_signals at the
   next open) as a new process in .venv-vectorbt/ (bench_engine.ensure_vectorbt makes it).
   Both commands run interleaved, after one untimed run each (the page cache, byte code and
   numba's cache), so a change in the machine's load hits both alike.
3. Side by side: ours/vectorbt (target <= 0.1), our peak RSS (target <= 300 MB, 10^6 bytes), and
   the cost per combination.
4. Cross-check, every combination: our CLI's total_return against vectorbt's adjusted for the fee
   convention (our equity = vectorbt's * (1 - f^2)^entries, see vectorbt_reference.py), entries
   against our trades, and the signals bar by bar; a bar where they differ must be a near-tie
   of the two SMAs (vectorbt's rolling means are rounded, ours are exact).
5. Where our time goes, in CPU time: a cold process that only imports what the CLI imports, then
   in process loading the CSV, signals, positions + equity, metrics, the whole job.backtest and
   its JSON; their sum against the cold CLI process's CPU time.

Exits 1 when a target is missed, a figure could not be measured, or the cross-check fails.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backtest import job
from backtest.data.candles import Candles, read_candle_file
from backtest.data.storage import resolve
from backtest.simulation.metrics import compute_metrics_block
from backtest.strategy import Grid, grid_of
from benchmarks.bench_engine import (
    VBT_SCRIPT,
    ensure_vectorbt,
    prepare_data,
    print_table,
    run_measured,
    vectorbt_options,
    verdict,
)

FEE_BPS = 10.0
FAST, SLOW = "24:240:24", "120:1440:24"
TARGET_VBT_RATIO = 0.1
TARGET_PEAK_MB = 300.0
RETURN_TOLERANCE = 1e-9  # relative, on final equity, once the fee conventions are accounted for
NEAR_TIE = 1e-9  # |SMA_fast / SMA_slow - 1| below which rounded rolling means may decide either way


# -- cold processes ---------------------------------------------------------------------------


@dataclass
class ColdRuns:
    """Wall times and peak RSS of one command's timed runs, and the stdout of its untimed first run."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    first_cmd: list[str] | None = None  # the untimed first run's command, when it differs
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # user + system
    peak_bytes: list[int] = field(default_factory=list)
    first_seconds: float = 0.0
    first_stdout: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def peak_mb(self) -> float:
        return max(self.peak_bytes) / 1e6


def cold_runs(runs: list[ColdRuns], repeats: dict[str, int]) -> None:
    """One untimed run of each command, then the timed ones, interleaved round by round."""
    for run in runs:
        run.first_seconds, _, _, run.first_stdout = run_measured(run.first_cmd or run.cmd, run.env)
    for round_ in range(max(repeats.values())):
        for run in runs:
            if round_ < repeats[run.name]:
                seconds, cpu, peak, _ = run_measured(run.cmd, run.env)
                run.seconds.append(seconds)
                run.cpu_seconds.append(cpu)
                run.peak_bytes.append(peak)
                print(
                    f"   {run.name:<9} run {round_ + 1}: {seconds:6.2f} s wall, {cpu:6.2f} s CPU, peak {peak / 1e6:,.0f} MB",
                    flush=True,
                )


# -- in process: where the time goes ---------------------------------------------------------


def split_once(csv_path: Path, grid: Grid, fee: float) -> dict[str, float]:
    """CPU seconds per stage of one grid run, the job's own loop (job.backtest) taken apart."""
    t: dict[str, float] = dict.fromkeys(("load", "signals", "equity", "metrics", "blocks"), 0.0)
    began = time.process_time()
    candles = read_candle_file(resolve(str(csv_path)))
    segment = job.Segment.of(candles, 0, len(candles))  # no --start: every bar is in the window
    t["load"] = time.process_time() - began
    blocks = job.signal_blocks(grid.strategy, candles, grid.combos, segment.first)
    while True:
        began = time.process_time()
        item = next(blocks, None)
        t["signals"] += time.process_time() - began
        if item is None:
            break
        t["blocks"] += 1
        began = time.process_time()
        sim = segment.run(item[1], fee)
        t["equity"] += time.process_time() - began
        began = time.process_time()
        compute_metrics_block(sim.equity, sim.position, segment.candles.close, segment.gaps, sim.counts())
        t["metrics"] += time.process_time() - began
    return t


def in_process_split(symbol: str, csv_path: Path, grid: Grid, repeats: int) -> dict[str, float]:
    """Median CPU seconds of each stage, of the whole job.backtest and of its JSON, over `repeats` runs.

    CPU time (process_time: user + system) rather than wall time: on a shared machine it hardly
    depends on what else runs, and it adds up with the cold processes' CPU times."""
    fee = FEE_BPS / 10_000
    spec = job.RunSpec(symbol=symbol, grid=grid, fee_bps=FEE_BPS, input_url=str(csv_path))
    samples: dict[str, list[float]] = {}
    job.backtest(spec)  # warm-up
    for _ in range(repeats):
        for name, seconds in split_once(csv_path, grid, fee).items():
            samples.setdefault(name, []).append(seconds)
        began = time.process_time()
        result, _ = job.backtest(spec)
        samples.setdefault("backtest", []).append(time.process_time() - began)
        began = time.process_time()
        job.to_json(result)
        samples.setdefault("json", []).append(time.process_time() - began)
    return {name: statistics.median(values) for name, values in samples.items()}


# -- cross-check --------------------------------------------------------------------------------


def cross_check(candles: Candles, grid: Grid, ours: dict, vbt: dict, vbt_signals: np.ndarray) -> bool:
    """Every combination: returns (fee convention accounted for), entries, and signals bar by bar."""
    fee = FEE_BPS / 10_000
    combos = [(c["fast"], c["slow"]) for c in grid.combos]
    theirs = {tuple(c): i for i, c in enumerate(vbt["combinations"])}
    rows = {(r["params"]["fast_bars"], r["params"]["slow_bars"]): r for r in ours["sweep"]}
    problems: list[str] = []
    if set(theirs) != set(combos) or set(rows) != set(combos) or vbt["skipped"] != grid.skipped:
        problems.append(f"the combinations differ: ours {len(rows)} (+{grid.skipped} skipped), vectorbt "
                        f"{len(theirs)} (+{vbt['skipped']} skipped), the grid {len(combos)}")  # fmt: skip
        combos = [c for c in combos if c in theirs and c in rows]

    close = candles.close
    sums = np.concatenate([[0.0], np.cumsum(close)])
    differing: dict[tuple[int, int], int] = {}
    not_ties = 0
    worst_same, worst_all, entry_mismatch = 0.0, 0.0, 0
    offset_of = {c: i for i, c in enumerate((c["fast"], c["slow"]) for c in grid.combos)}
    ours_signals = np.concatenate([s for _, s in job.signal_blocks(grid.strategy, candles, grid.combos, 0)])
    for combo in combos:
        fast, slow = combo
        mine = ours_signals[offset_of[combo]]
        other = np.unpackbits(vbt_signals[theirs[combo]], count=len(close)).astype(bool)
        bars = np.nonzero(mine != other)[0]
        if len(bars):
            differing[combo] = len(bars)
            sma_f = (sums[bars + 1] - sums[bars + 1 - fast]) / fast
            sma_s = (sums[bars + 1] - sums[np.maximum(bars + 1 - slow, 0)]) / slow
            not_ties += int(np.sum((bars < slow - 1) | (np.abs(sma_f / sma_s - 1) > NEAR_TIE)))
        i = theirs[combo]
        expected = (1 + vbt["total_return"][i]) * (1 - fee * fee) ** vbt["entries"][i]
        relative = abs(1 + rows[combo]["total_return"] - expected) / expected
        worst_all = max(worst_all, relative)
        if not len(bars):
            worst_same = max(worst_same, relative)
            entry_mismatch += vbt["entries"][i] != rows[combo]["trades"]

    print(f"\n4. cross-check of every combination ({len(combos)}), ours = our CLI's JSON, fee {FEE_BPS:g} bps")
    print(f"   combinations whose signals differ on some bar: {len(differing)}", end="")
    if differing:
        shown = ", ".join(f"{f}/{s}: {n} bars" for (f, s), n in sorted(differing.items())[:8])
        print(f" ({shown}{', ...' if len(differing) > 8 else ''}); bars that are not near-ties: {not_ties}")
    else:
        print()
    print(f"   max relative difference of final equity, ours vs vectorbt * (1 - f^2)^entries: {worst_same:.1e}")
    print(
        f"     (over the {len(combos) - len(differing)} combinations with identical signals; over all: {worst_all:.1e})"
    )
    print(f"   combinations whose entries differ from our trades (identical signals): {entry_mismatch}")
    ok = not problems and not not_ties and worst_same <= RETURN_TOLERANCE and not entry_mismatch
    for problem in problems:
        print(f"   {problem}")
    print(f"   {'AGREE' if ok else 'DISAGREE'} (tolerance {RETURN_TOLERANCE:g} relative; near-tie {NEAR_TIE:g})")
    return ok


# -- main -------------------------------------------------------------------------------------


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


def seconds_text(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}..{max(values):.2f})"


def cold_rows(
    label: str, runs: ColdRuns, k: int, *, first_run: bool = False, peak_target: float | None = None
) -> list[tuple[str, str, str, str]]:
    """One command's rows in the table of section 3: wall and CPU time of its timed runs, its
    untimed first run (`first_run`), its peak RSS (against `peak_target`) and the cost per combination."""
    rows = [
        (f"{label}, cold, median of {len(runs.seconds)}", seconds_text(runs.seconds), "", ""),
        ("   CPU time (user + system), median", f"{statistics.median(runs.cpu_seconds):.2f} s", "", ""),
    ]
    if first_run:
        rows.append(("   its first run (numba compiles unless cached)", f"{runs.first_seconds:.2f} s", "", ""))
    target = (f"<= {peak_target:g} MB", verdict(runs.peak_mb <= peak_target)) if peak_target else ("", "")
    rows += [
        ("   peak RSS (largest run)", f"{runs.peak_mb:,.0f} MB", *target),
        ("   per combination", f"{runs.median / k * 1e3:.2f} ms", "", ""),
    ]
    return rows


def side_by_side(ours: ColdRuns, theirs: ColdRuns | None, version: str, k: int) -> bool:
    """The table of section 3; True when every target is met."""
    ok = ours.peak_mb <= TARGET_PEAK_MB
    rows = cold_rows(f"vectorbt {version}", theirs, k, first_run=True) if theirs is not None else []
    rows += cold_rows("ours", ours, k, peak_target=TARGET_PEAK_MB)
    if theirs is not None:
        ratio = ours.median / theirs.median
        ok &= ratio <= TARGET_VBT_RATIO
        rows += [
            ("ours / vectorbt, wall time", f"{ratio:.3f} (1/{1 / ratio:.1f})", f"<= {TARGET_VBT_RATIO:g}",
             verdict(ratio <= TARGET_VBT_RATIO)),
            ("ours / vectorbt, CPU time",
             f"{statistics.median(ours.cpu_seconds) / statistics.median(theirs.cpu_seconds):.3f}", "", ""),
            ("ours / vectorbt, peak RSS", f"{ours.peak_mb / theirs.peak_mb:.3f}", "", ""),
        ]  # fmt: skip
    else:
        rows.append(("ours / vectorbt, wall time", "not measured", f"<= {TARGET_VBT_RATIO:g}", "MISS"))
        ok = False
    print_table(f"3. side by side, {k} combinations (MB = 10^6 bytes)", rows)
    return ok


def print_split(split: dict[str, float], ours: ColdRuns, imports: ColdRuns, k: int, repeats: int) -> None:
    compute = split["signals"] + split["equity"] + split["metrics"]
    imports_cpu = statistics.median(imports.cpu_seconds)
    rows = [
        (f"cold: start-up + imports (the job, the built-ins), median of {len(imports.seconds)}",
         f"{imports_cpu * 1e3:,.1f} ms", "", ""),
        ("load the CSV (read_candle_file, Segment.of)", f"{split['load'] * 1e3:,.1f} ms", "", ""),
        (f"signals ({split['blocks']:.0f} blocks, job.signal_blocks)", f"{split['signals'] * 1e3:,.1f} ms", "", ""),
        ("positions + equity (Segment.run)", f"{split['equity'] * 1e3:,.1f} ms", "", ""),
        ("metrics (compute_metrics_block)", f"{split['metrics'] * 1e3:,.1f} ms", "", ""),
        ("   signals + equity + metrics per combination", f"{compute / k * 1e3:.3f} ms", "", ""),
        ("job.backtest as a whole (the above and the result)", f"{split['backtest'] * 1e3:,.1f} ms", "", ""),
        ("JSON of the result (job.to_json)", f"{split['json'] * 1e3:,.1f} ms", "", ""),
        ("   start-up + job.backtest + JSON", f"{(imports_cpu + split['backtest'] + split['json']) * 1e3:,.1f} ms",
         "", ""),
        ("cold `python -m backtest run` (section 3)", f"{statistics.median(ours.cpu_seconds) * 1e3:,.1f} ms", "", ""),
    ]  # fmt: skip
    print_table(f"5. where our time goes: CPU time (user + system), in process median of {repeats}", rows)


def main() -> int:
    skip = "leave vectorbt out (exits 1: ratio unchecked)"
    args = vectorbt_options(__doc__, repeats=5, cold_repeats=7, vbt_repeats=5, skip=skip)

    grid = grid_of("sma_cross", {"fast": FAST, "slow": SLOW})
    k = len(grid.combos)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        symbol, description, csv_path = prepare_data(Path(tmp))
        candles = read_candle_file(resolve(str(csv_path)))
        print("strategy grid benchmark: sma_cross, ours against vectorbt")
        print(f"data:    {description}, {len(candles):,} bars")
        print(
            f"grid:    fast={FAST} x slow={SLOW} bars: {k} combinations, {grid.skipped} rejected; fee {FEE_BPS:g} bps"
        )
        print(f"machine: CPython {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")

        ours_cmd = [sys.executable, "-m", "backtest", "run", "--symbol", symbol, "--input", str(csv_path),
                    "--strategy", "sma_cross", "--param", f"fast={FAST}", "--param", f"slow={SLOW}",
                    "--fee-bps", f"{FEE_BPS:g}"]  # fmt: skip
        imports_code = "from backtest import job, strategy; strategy.load_strategies()"  # what the CLI imports
        imports_cmd = [sys.executable, "-c", imports_code]
        runs = [ColdRuns("ours", ours_cmd, dict(os.environ)), ColdRuns("imports", imports_cmd, dict(os.environ))]
        repeats = {"ours": args.cold_repeats, "imports": args.cold_repeats}
        vbt_python = None if args.skip_vectorbt else ensure_vectorbt()
        signals_path = Path(tmp) / "vbt_signals.npy"
        if vbt_python:
            vbt_cmd = [vbt_python, str(VBT_SCRIPT), "--input", str(csv_path), "--fast", FAST, "--slow", SLOW,
                       "--fee-bps", f"{FEE_BPS:g}"]  # fmt: skip
            vbt_env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
            # The untimed first run also saves the signals for the cross-check; the timed ones do not.
            runs.append(ColdRuns("vectorbt", vbt_cmd, vbt_env, [*vbt_cmd, "--signals-out", str(signals_path)]))
            repeats["vectorbt"] = args.vbt_repeats

        print(f"\n1.-2. cold processes (one untimed run each, then interleaved); before: {load_text()}", flush=True)
        cold_runs(runs, repeats)
        print(f"   after: {load_text()}")
        result = json.loads(runs[0].first_stdout)
        if result["grid"]["combinations"] != k or result["grid"]["skipped"] != grid.skipped:
            raise SystemExit(f"the CLI ran {result['grid']}, not {k} combinations with {grid.skipped} skipped")

        theirs = runs[2] if vbt_python else None
        vbt = json.loads(theirs.first_stdout) if theirs else None
        ok = side_by_side(runs[0], theirs, vbt["vectorbt_version"] if vbt else "", k)
        if vbt is not None:
            ok &= cross_check(candles, grid, result, vbt, np.load(signals_path))
        else:
            print("\n4. cross-check: skipped (no vectorbt)")

        print(f"\n   in process, before: {load_text()}", flush=True)
        print_split(in_process_split(symbol, csv_path, grid, args.repeats), runs[0], runs[1], k, args.repeats)
        print(f"   after: {load_text()}")
        print("\nall targets met, cross-check agrees" if ok else "\nTARGET MISSED or cross-check failed (see above)")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
