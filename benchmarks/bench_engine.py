"""How fast is the backtest job? Engine, a window sweep, a cold CLI run, and vectorbt for scale.

    .venv/bin/python -m benchmarks.bench_engine            (or: make bench)

Data: the real Binance BTCUSDT hourly candles in ../shared/data/binance-spot-1h/ when present,
else ~24,000 bars of synthetic candles (backtest.data.synthetic); the output says which.

a) engine only: sma_trend's signal, positions, equity and metrics for one pair and one window
   (360 bars), in process, through the job's own functions (strategy.signals, job.Segment).
b) a 100-window sweep (24..2400 bars, step 24) as the job runs a grid: signal blocks
   (job.signal_blocks), then positions + equity and metrics over each block.
c) `python -m backtest run --window 15d` as a new process (cold start), on the CSV and on the
   same candles as Parquet, against the floor `python -c "import pandas; pd.read_parquet(...)"`.
d) the same backtest with vectorbt (benchmarks/vectorbt_reference.py) as a new process, from its
   own virtualenv .venv-vectorbt/ (created here when missing; skipped if the install fails),
   and a check that both total returns agree once the fee conventions are accounted for.

Figures are medians of several runs timed with time.perf_counter. Targets: a) <= 1 ms per
pair-window, c) ours <= 1.2x the floor, d) ours <= 1/10 of vectorbt's cold run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from backtest.data.candles import Candles, read_candle_file
from backtest.data.storage import resolve
from backtest.data.synthetic import EPOCH_MS, synthetic_candles
from backtest.job import Segment, signal_blocks
from backtest.params import HOUR_MS, format_time_ms
from backtest.simulation.metrics import compute_metrics_block
from backtest.strategy import grid_of

REPO = Path(__file__).resolve().parents[1]

SHARED_DATA = REPO.parent / "shared" / "data" / "binance-spot-1h"
SYMBOL = "BTCUSDT"
WINDOW = "15d"
WINDOW_BARS = 360
FEE_BPS = 10.0
SWEEP_WINDOWS = "24:2400:24"  # 100 windows, in bars
SYNTHETIC_BARS = 24_000

# vectorbt in its own virtualenv: this combination installs and runs on Python 3.11 here
# (vectorbt 1.2.0 needs numba, which pins llvmlite and caps numpy).
VBT_VENV = REPO / ".venv-vectorbt"
VBT_REQUIREMENTS = ("vectorbt==1.2.0", "numba==0.68.1", "llvmlite==0.50.0", "numpy==2.4.6", "pandas==3.1.1")
VBT_STAMP = VBT_VENV / ".bench-installed"
VBT_SCRIPT = REPO / "benchmarks" / "vectorbt_reference.py"

TARGET_ENGINE_MS = 1.0
TARGET_FLOOR_RATIO = 1.2
TARGET_VBT_RATIO = 0.1


# -- helpers ----------------------------------------------------------------------------------


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_process(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr.strip()}")
    return done


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds, peak RSS in bytes, stdout) of `cmd` as a new process.

    CPU time and peak are the process's own rusage (ru_maxrss is KiB on Linux), from os.wait4 on
    exactly that child, so nothing else the benchmark ran counts toward them."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{err.read().decode().strip()}")
        return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, out.read().decode()


def cold_runs(commands: dict[str, list[str]], repeats: int, env: dict[str, str]) -> dict[str, float]:
    """Median wall time of each command as a new process; runs interleaved so drift hits all alike."""
    for cmd in commands.values():  # warm-up: byte-code caches, the OS page cache
        run_process(cmd, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, cmd in commands.items():
            start = time.perf_counter()
            run_process(cmd, env)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_table(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    print(f"\n{title}")
    header = ("measure", "median", "target", "")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    line = f"{{:<{widths[0]}}}  {{:>{widths[1]}}}  {{:<{widths[2]}}}  {{}}"
    for row in [header, *rows]:
        print(("  " + line.format(*row)).rstrip())


def vectorbt_options(doc: str, repeats: int, cold_repeats: int, vbt_repeats: int, skip: str) -> argparse.Namespace:
    """The command line of a benchmark of ours against vectorbt: `doc`'s first line, the number of
    runs of each kind (the defaults given), and --skip-vectorbt (`skip`: its help)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    runs = {
        "--repeats": (repeats, "in-process runs per measurement"),
        "--cold-repeats": (cold_repeats, "timed cold runs of ours"),
        "--vbt-repeats": (vbt_repeats, "timed cold runs of vectorbt"),
    }
    for option, (default, what) in runs.items():
        parser.add_argument(option, type=int, default=default, help=f"{what} (default {default})")
    parser.add_argument("--skip-vectorbt", action="store_true", help=skip)
    return parser.parse_args()


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.3f} ms" if seconds < 0.01 else f"{seconds * 1e3:,.1f} ms"


# -- data -------------------------------------------------------------------------------------


def write_csv(candles: Candles, path: Path) -> None:
    """Binance-export layout (`date,open,high,low,close,volume`), floats written round-trip exact."""
    dates = np.datetime_as_string(candles.open_time.astype("datetime64[ms]"), unit="s")
    with path.open("w") as out:
        out.write("date,open,high,low,close,volume\n")
        columns = (candles.open, candles.high, candles.low, candles.close, candles.volume)
        for date, *values in zip(dates, *columns, strict=True):
            out.write(date.replace("T", " ") + "," + ",".join(repr(float(v)) for v in values) + "\n")


def prepare_data(workdir: Path) -> tuple[str, str, Path]:
    """(symbol, description, CSV path): the real BTCUSDT file if present, else a synthetic CSV."""
    real = sorted(SHARED_DATA.glob(f"*{SYMBOL}*.csv")) if SHARED_DATA.is_dir() else []
    if real:
        return SYMBOL, f"REAL Binance {SYMBOL} 1h candles: {real[0]}", real[0]
    candles = synthetic_candles("SYNTHUSDT", EPOCH_MS, EPOCH_MS + SYNTHETIC_BARS * HOUR_MS)
    path = workdir / "SYNTHUSDT.csv"
    write_csv(candles, path)
    reason = f"{SHARED_DATA} not found"
    return "SYNTHUSDT", f"SYNTHETIC candles (backtest.data.synthetic, {reason}): {path}", path


def csv_to_parquet(csv_path: Path, parquet_path: Path) -> None:
    pq.write_table(pacsv.read_csv(csv_path), parquet_path)


# -- a) and b): in process --------------------------------------------------------------------


def bench_engine(candles: Candles, repeats: int) -> tuple[list[tuple[str, str, str, str]], dict]:
    fee = FEE_BPS / 10_000
    segment = Segment.of(candles, 0, len(candles))  # every bar in the window, as the CLI without --start
    one = grid_of("sma_trend", {"window": str(WINDOW_BARS)})
    sweep_grid = grid_of("sma_trend", {"window": SWEEP_WINDOWS})
    strategy, combos = sweep_grid.strategy, sweep_grid.combos

    def one_window() -> dict:
        (metrics,), _, _ = segment.metrics(strategy.signals(candles, one.combos), fee)
        return metrics

    def sweep_signals() -> list:
        return list(signal_blocks(strategy, candles, combos, segment.first))

    blocks = sweep_signals()
    runs = [segment.run(signals, fee) for _, signals in blocks]

    def sweep_equity() -> list:
        return [segment.run(signals, fee) for _, signals in blocks]

    def sweep_metrics() -> list:
        close = segment.candles.close
        return [compute_metrics_block(s.equity, s.position, close, segment.gaps, s.counts()) for s in runs]

    def sweep() -> list:
        return [
            row
            for _, signals in signal_blocks(strategy, candles, combos, segment.first)
            for row in segment.metrics(signals, fee)[0]
        ]

    single = median_seconds(one_window, repeats * 20, warmup=5)
    sweep_total = median_seconds(sweep, repeats)
    sweep_sig = median_seconds(sweep_signals, repeats)
    sweep_eq = median_seconds(sweep_equity, repeats)
    sweep_met = median_seconds(sweep_metrics, repeats)
    k = len(combos)
    first, last = combos[0]["window"], combos[-1]["window"]
    rows = [
        (
            f"a) signal+equity+metrics, 1 window ({WINDOW_BARS} bars) x {len(candles):,} bars",
            ms(single),
            f"<= {TARGET_ENGINE_MS:g} ms",
            verdict(single * 1e3 <= TARGET_ENGINE_MS),
        ),
        (f"b) sweep, {k} windows ({first}..{last}), total", ms(sweep_total), "", ""),
        ("   per window", ms(sweep_total / k), f"<= {TARGET_ENGINE_MS:g} ms", verdict(sweep_total / k * 1e3 <= 1)),
        (f"   of which signals ({len(blocks)} blocks, job.signal_blocks)", ms(sweep_sig), "", ""),
        ("   of which positions + equity (Segment.run per block)", ms(sweep_eq), "", ""),
        ("   of which metrics (compute_metrics_block per block)", ms(sweep_met), "", ""),
    ]
    return rows, one_window()


# -- c) and d): cold processes ----------------------------------------------------------------


def backtest_cmd(symbol: str, path: Path) -> list[str]:
    return [sys.executable, "-m", "backtest", "run", "--symbol", symbol, "--input", str(path), "--window", WINDOW]


def bench_cold(symbol: str, csv_path: Path, parquet_path: Path, repeats: int, in_process: dict):
    env = dict(os.environ)  # the project is installed in this venv
    floor_code = f"import pandas as pd; pd.read_parquet({str(parquet_path)!r})"
    # As in the image, where pandas is not installed: a finder that fails every `import pandas`.
    no_pandas_code = (
        "import sys\n"
        "class NoPandas:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'pandas': raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, NoPandas())\n"
        "from backtest.cli import main\n"
        f"raise SystemExit(main(['run', '--symbol', {symbol!r}, '--input', {str(parquet_path)!r}, '--window', {WINDOW!r}]))"
    )
    commands = {
        "floor": [sys.executable, "-c", floor_code],
        "csv": backtest_cmd(symbol, csv_path),
        "parquet": backtest_cmd(symbol, parquet_path),
        "no_pandas": [sys.executable, "-c", no_pandas_code],
    }
    try:
        run_process(commands["floor"], env)
    except RuntimeError as exc:
        print(f"\nc) floor skipped: pandas not importable ({exc})")
        del commands["floor"]

    # The CLI's answer must be the in-process one, whichever file it reads.
    for name in ("csv", "parquet", "no_pandas"):
        result = json.loads(run_process(commands[name], env).stdout)
        if result["total_return"] != in_process["total_return"] or result["trades"] != in_process["trades"]:
            raise SystemExit(f"CLI ({name}) disagrees with the in-process run: {result} vs {in_process}")

    med = cold_runs(commands, repeats, env)
    floor = med.get("floor")

    def ratio_row(label: str, seconds: float) -> tuple[str, str, str, str]:
        if floor is None:
            return (label, ms(seconds), "", "")
        ratio = seconds / floor
        return (label, ms(seconds), f"<= {TARGET_FLOOR_RATIO:g}x floor", f"{ratio:.2f}x  {verdict(ratio <= 1.2)}")

    rows = []
    if floor is not None:
        rows.append(("c) floor: python -c 'import pandas; pd.read_parquet(...)'", ms(floor), "", "1.00x"))
    rows += [
        ratio_row(f"   ours: python -m backtest run --window {WINDOW}, CSV", med["csv"]),
        ratio_row("   ours: same, Parquet", med["parquet"]),
        ratio_row("   ours: same, Parquet, pandas unimportable (as in the image)", med["no_pandas"]),
    ]
    return rows, med


def ensure_vectorbt() -> str | None:
    """Path of .venv-vectorbt's python, creating the venv when missing; None if that fails."""
    python = VBT_VENV / "bin" / "python"
    wanted = "\n".join(VBT_REQUIREMENTS)
    if python.exists() and VBT_STAMP.exists() and VBT_STAMP.read_text() == wanted:
        return str(python)
    base = shutil.which("python3.11") or sys.executable
    print(f"\nd) installing {', '.join(VBT_REQUIREMENTS)} into {VBT_VENV} (once; about a minute) ...", flush=True)
    steps = [
        [base, "-m", "venv", str(VBT_VENV)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *VBT_REQUIREMENTS],
    ]
    for cmd in steps if not python.exists() else steps[1:]:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"d) SKIPPED: could not install vectorbt ({exc})")
            return None
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if not line.startswith("WARNING")]
            print(f"d) SKIPPED: `{' '.join(cmd[-3:])}` failed:\n   " + "\n   ".join(errors[-5:]))
            return None
    VBT_STAMP.write_text(wanted)
    return str(python)


def bench_vectorbt(csv_path: Path, repeats: int, ours_csv: float, in_process: dict):
    python = ensure_vectorbt()
    if python is None:
        return None
    cmd = [python, str(VBT_SCRIPT), "--input", str(csv_path), "--window", str(WINDOW_BARS), "--fee-bps", str(FEE_BPS)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    start = time.perf_counter()
    first = run_process(cmd, env)  # the first run ever also compiles vectorbt's numba functions into its cache
    first_seconds = time.perf_counter() - start
    vbt = json.loads(first.stdout)
    cold = cold_runs({"vbt": cmd}, repeats, env)["vbt"]
    ratio = ours_csv / cold
    rows = [
        ("d) vectorbt, cold process, numba cache filled", ms(cold), "", ""),
        ("   vectorbt, first run here (numba compiles unless cached)", ms(first_seconds), "", ""),
        (
            f"   ours, cold process (CSV), vs vectorbt {vbt['vectorbt_version']}",
            ms(ours_csv),
            f"<= {TARGET_VBT_RATIO:g}x vectorbt",
            f"{ratio:.3f}x (1/{1 / ratio:.0f})  {verdict(ratio <= TARGET_VBT_RATIO)}",
        ),
    ]
    return rows, vbt


def report_returns(in_process: dict, vbt: dict) -> None:
    fee = FEE_BPS / 10_000
    ours_equity = 1 + in_process["total_return"]
    vbt_equity = 1 + vbt["total_return"]
    expected = (1 - fee * fee) ** vbt["entries"]
    print("\nd) sanity check, total return over the whole file (window 360 bars, fee 10 bps per side)")
    print(f"   ours      {in_process['total_return']:+.12f}  ({in_process['trades']} entries)")
    print(f"   vectorbt  {vbt['total_return']:+.12f}  ({vbt['entries']} entries, {vbt['exits']} exits)")
    print(f"   final equity ratio ours/vectorbt          {ours_equity / vbt_equity:.12f}")
    print(f"   fee convention predicts (1 - f^2)^entries {expected:.12f}")
    residual = abs(ours_equity / vbt_equity - expected)
    agree = residual < 1e-9 and vbt["entries"] == in_process["trades"]
    print(
        "   (vectorbt charges the fee on top of a buy, cash/(1+f); ours invests (1-f) of the cash;\n"
        f"    sells are identical. Residual after that: {residual:.1e}: {'AGREE' if agree else 'DISAGREE'}.)"
    )


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    args = vectorbt_options(__doc__, repeats=7, cold_repeats=5, vbt_repeats=3, skip="leave out d)")

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        symbol, description, csv_path = prepare_data(workdir)
        parquet_path = workdir / f"{symbol}.parquet"
        csv_to_parquet(csv_path, parquet_path)
        candles = read_candle_file(resolve(str(csv_path)))

        print("backtest engine benchmark")
        print(f"data:    {description}")
        print(
            f"         {len(candles):,} bars, {format_time_ms(int(candles.open_time[0]))} .. "
            f"{format_time_ms(int(candles.open_time[-1]))} (open times); Parquet copy: {parquet_path.name}"
        )
        print(
            f"machine: {platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}, "
            f"pyarrow {pa.__version__}, {os.cpu_count()} CPUs, {platform.machine()}"
        )

        rows, in_process = bench_engine(candles, args.repeats)
        print_table("a) b) in process (all bars in the window, as the CLI without --start)", rows)

        cold_rows, cold = bench_cold(symbol, csv_path, parquet_path, args.cold_repeats, in_process)
        print_table(f"c) cold processes (median of {args.cold_repeats}, interleaved)", cold_rows)

        if args.skip_vectorbt:
            print("\nd) vectorbt: skipped (--skip-vectorbt)")
            return
        outcome = bench_vectorbt(csv_path, args.vbt_repeats, cold["csv"], in_process)
        if outcome is None:
            return
        vbt_rows, vbt = outcome
        print_table(f"d) vectorbt (median of {args.vbt_repeats} cold runs, {VBT_VENV.name}/)", vbt_rows)
        report_returns(in_process, vbt)


if __name__ == "__main__":
    main()
