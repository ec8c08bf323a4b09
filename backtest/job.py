"""One backtest job: load a pair's candles, run the strategy, compute metrics, store the result.

This is what `python -m backtest run` does in one AWS Batch job or one local process, for one
pair or a chunk of pairs. Each pair's result is one JSON object; with a results URL it is also
written, beside the best combination's equity curve, as `{results_url}/{symbol}.json` and
`{symbol}.equity.parquet` (each atomically, the JSON last, and nothing when the pair fails).

Every combination of one strategy's parameter grid is evaluated over the same candles, in blocks
(`signal_blocks`). With a hold-out, the window is split at `end - holdout_days`: every
combination is backtested on the in-sample part and, separately, on the out-of-sample part
(starting flat, warmed up by the bars before it); the best is chosen on the in-sample figures
only, and its out-of-sample figures are reported beside them. With a walk-forward (`backtest.simulation.walkforward`), each fold's training window chooses the
combination its test window trades, and the stitched test windows are the out-of-sample figures.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from backtest.data.candles import Candles, read_candle_file, to_arrow
from backtest.data.storage import delete, resolve, write_bytes_atomic
from backtest.data.store import CandleStore
from backtest.errors import DataError, InputError
from backtest.params import DAY_MS, HOUR_MS, floor_hour_ms, format_time_ms, validate_symbol
from backtest.result_files import equity_file, error_file, oos_equity_file, result_file, trades_file
from backtest.simulation.engine import Segment
from backtest.simulation.execution import SIDE_NAMES, Combinations, ExecutionGrid, check_sides
from backtest.simulation.metrics import SELECT_METRICS, deflated_sharpe, first_best
from backtest.simulation.position import position_now
from backtest.simulation.trade_stats import trade_statistics, trades_table
from backtest.simulation.walkforward import Selection, WalkForward, make_folds
from backtest.strategies.contract import Combo, Strategy, declared_sides
from backtest.strategies.grid import Grid

log = logging.getLogger("backtest")

JOBS_DIR = "_jobs"  # {results_url}/_jobs/{job}.json: each job's wall time and size (its cost)
JOB_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")  # BACKTEST_JOB_NAME: a file name, never a path (Batch allows these)

BLOCK_CELLS = 2_000_000  # combinations x bars per signal block: bounds memory for any grid size
# A result's `selection`: how its headline figures were chosen (docs/job.md, "What was selected how")
SELECTIONS = ("none", "in_sample_best", "holdout", "walk_forward")


@dataclass(frozen=True)
class RunSpec:
    """A validated request for one pair's backtest of one strategy's grid."""

    symbol: str
    grid: Grid
    fee_bps: float
    start_ms: int | None = None
    end_ms: int | None = None
    data_url: str | None = None
    input_url: str | None = None
    holdout_days: int = 0
    select_by: str = "total_return"
    walk_forward: WalkForward | None = None
    execution: ExecutionGrid = dataclasses.field(default_factory=ExecutionGrid)

    @property
    def is_sweep(self) -> bool:
        return self.grid.is_grid or self.execution.is_grid or self.holdout_days > 0 or self.walk_forward is not None


@dataclass(frozen=True)
class Curves:
    """What a result stores beside its JSON (`backtest.result_files`): the reported equity curve,
    the chosen combination's trades, and with a hold-out its out-of-sample curve."""

    equity: pa.Table
    trades: pa.Table | None = None
    oos_equity: pa.Table | None = None


@dataclass(frozen=True)
class LoadedCandles:
    candles: Candles  # warm-up bars followed by the in-window bars
    first_bar: int  # index of the first in-window bar
    source: str  # binance, synthetic, file, or a comma-joined mix


def load_candles(spec: RunSpec, warmup: int) -> LoadedCandles:
    """Read the window's candles plus up to `warmup` candles before it."""
    if spec.input_url:
        candles = read_candle_file(resolve(spec.input_url), spec.symbol)
        lo = 0 if spec.start_ms is None else int(np.searchsorted(candles.open_time, spec.start_ms))
        hi = len(candles) if spec.end_ms is None else int(np.searchsorted(candles.open_time, spec.end_ms))
        first = max(0, lo - warmup)
        return LoadedCandles(candles.slice(first, hi), lo - first, "file")
    store = CandleStore(spec.data_url)
    stored = store.read(spec.symbol, spec.start_ms, spec.end_ms, warmup_bars=warmup)
    times = stored.candles.open_time
    first_bar = 0 if spec.start_ms is None else int(np.searchsorted(times, spec.start_ms))
    source = ",".join(sorted(stored.sources)) or "unknown"
    log.info("read %d candles of %s from months %s", len(times), spec.symbol, ", ".join(stored.months_read))
    return LoadedCandles(stored.candles, first_bar, source)


def signal_blocks(
    strategy: Strategy, candles: Candles, combos: list[Combo], first_bar: int, rows_per_combo: int = 1
) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, targets) for consecutive blocks of combinations, each a (k, n) int8 array of
    targets in {-1, 0, 1} (a bool signal: 1 for True).

    Each combination's signal is what a run of that combination alone computes: from its own
    warm-up start, `first_bar - warmup_bars` (or the first candle read). A fixed-lookback
    strategy gives the same signals from any earlier start (what the look-ahead check tests), so
    its block is one call over all candles; one with a seed or a state (`seeded`) is called once
    per distinct warm-up start, so that a grid row equals the single run of its parameters.
    """
    n = len(candles)
    size = max(1, BLOCK_CELLS // max(n * rows_per_combo, 1))
    for offset in range(0, len(combos), size):
        block = combos[offset : offset + size]
        if not strategy.seeded:
            yield offset, strategy.checked_signals(candles, block).astype(np.int8, copy=False)
            continue
        signals = np.zeros((len(block), n), dtype=np.int8)
        starts = [max(0, first_bar - strategy.warmup_bars(combo)) for combo in block]
        for start in sorted(set(starts)):
            rows = [i for i, s in enumerate(starts) if s == start]
            signals[rows, start:] = strategy.checked_signals(candles.slice(start, n), [block[i] for i in rows])
        yield offset, signals


def check_select_by(select_by: str) -> None:
    if select_by not in SELECT_METRICS:
        raise InputError(f"invalid --select-by {select_by!r}: one of {', '.join(SELECT_METRICS)}")


def selection_of(spec: RunSpec, combinations: int) -> str:
    """SELECTIONS: one combination (`none`), or how the grid's figures were chosen."""
    if spec.walk_forward:
        return "walk_forward"
    if spec.holdout_days:
        return "holdout"
    return "in_sample_best" if combinations > 1 else "none"


def backtest(spec: RunSpec) -> tuple[dict, Curves]:
    """Run one pair's backtest (or grid); returns the result object and its curves and trades.

    Only candles closed by `end` count: one that opens at t closes at t + 1h, so `end` is floored
    to the hour (as the refresh floors `until`).
    """
    validate_symbol(spec.symbol)
    if spec.end_ms is not None:
        spec = dataclasses.replace(spec, end_ms=floor_hour_ms(spec.end_ms))
    check_select_by(spec.select_by)
    if spec.walk_forward and spec.holdout_days:
        raise InputError(
            "give either a walk-forward or a hold-out, not both: the walk-forward's test windows are its out-of-sample part"
        )
    if spec.start_ms is not None and spec.end_ms is not None and spec.start_ms >= spec.end_ms:
        raise InputError(
            f"empty window: start {format_time_ms(spec.start_ms)} is not before end {format_time_ms(spec.end_ms)}"
        )
    grid, strategy = spec.grid, spec.grid.strategy
    check_sides(spec.execution, strategy.title, declared_sides(strategy))
    combos = Combinations(grid, spec.execution.executions)
    loaded = load_candles(spec, grid.warmup_bars())
    candles, first = loaded.candles, loaded.first_bar
    if len(candles) - first <= 0:
        raise DataError(f"no candles for {spec.symbol} in the window {_window_text(spec)}")
    _check_lookback(spec, len(candles), "the window's end")
    end_ms = spec.end_ms if spec.end_ms is not None else int(candles.open_time[-1]) + HOUR_MS
    fee = spec.fee_bps / 10_000
    walk = None
    if spec.walk_forward:
        folds = make_folds(spec.walk_forward, candles.open_time, int(candles.open_time[first]), end_ms)
        _check_lookback(spec, folds[0].test_first, "the end of the first walk-forward training window")
        walk = Selection(candles, folds, fee, spec.select_by)
    split = len(candles)
    if spec.holdout_days:
        split = int(np.searchsorted(candles.open_time, end_ms - spec.holdout_days * DAY_MS))
        if split <= first or split >= len(candles):
            raise InputError(f"a {spec.holdout_days}-day hold-out leaves no in-sample or no out-of-sample bars")
        # as the walk-forward's first training window: the in-sample part must hold the grid's lookback
        split_time = format_time_ms(int(candles.open_time[split]))
        _check_lookback(
            spec, split, f"the end of the in-sample part (the {spec.holdout_days}-day hold-out's split, {split_time})"
        )

    in_sample = Segment.of(candles, first, split)
    out_sample = Segment.of(candles, split, len(candles)) if spec.holdout_days else None
    in_metrics: list[dict] = []
    oos_metrics: list[dict] = []
    best, best_score, best_run = 0, -math.inf, None
    per_combo = len(combos.executions)
    for offset, block in signal_blocks(strategy, candles, grid.combos, first, per_combo):
        targets, executions = block, combos.executions  # each row with each execution: combination offset + i
        offset *= per_combo
        metrics, sim = in_sample.metrics(targets, fee, executions)
        i, block_score = first_best(metrics, spec.select_by)
        if best_run is None or block_score > best_score:
            best, best_score = offset + i, block_score
            best_run = (sim.position[i].copy(), sim.equity[i].copy(), sim.trades(i), targets[i // per_combo].copy())
        in_metrics += metrics
        if out_sample:
            oos_metrics += out_sample.metrics(targets, fee, executions)[0]
        if walk:
            walk.add(offset, targets, executions, in_sample, sim)

    position, equity_values, trades, best_targets = best_run
    in_window = candles.slice(first, len(candles))
    sharpes = [row["sharpe"] for row in in_metrics]
    dsr, sr0 = deflated_sharpe(equity_values, sharpes, len(combos)) if len(combos) > 1 else (None, None)
    result = {
        "symbol": spec.symbol,
        "strategy": strategy.name,
        "params": {**combos.params_json(best), "fee_bps": spec.fee_bps},
        "execution": combos.execution(best).describe(),
        "start": format_time_ms(spec.start_ms if spec.start_ms is not None else int(in_window.open_time[0])),
        "end": format_time_ms(end_ms),
        "first_bar": format_time_ms(int(in_window.open_time[0])),
        "last_bar": format_time_ms(int(in_window.open_time[-1])),
        "warmup_bars": first,
        "data_source": loaded.source,
        "synthetic": "synthetic" in loaded.source,
        **in_metrics[best],
        "final_position": SIDE_NAMES[int(position[-1])],
        "selection": selection_of(spec, len(combos)),
        "dsr": dsr,
        "next": {"params": combos.params_json(best), "execution": combos.execution(best).describe()},
        "trade_stats": trade_statistics(trades, position),
        # what it holds at the as-of moment (the hold-out's or the last fold's run, below)
        **position_now(in_sample.candles, position, trades, best_targets[first:split], combos.execution(best), fee),
    }
    times = candles.open_time
    trade_parts = [("in_sample", trades, position, times[first:split])]
    oos_equity = None
    if spec.is_sweep:
        result["grid"] = {
            "values": {p.name: grid.spec.get(p.name, str(p.default)) for p in strategy.params},
            "execution": dict(spec.execution.spec),
            "combinations": len(combos),
            "skipped": grid.skipped * per_combo,
            "holdout_days": spec.holdout_days,
            "select_by": spec.select_by,
            "trials": len(combos),
            "sr0": sr0,
        }
        result["best"] = combos.params_json(best)
        if spec.holdout_days:
            result["split"] = format_time_ms(int(candles.open_time[split]))
            execution = combos.execution(best)
            oos_sim = out_sample.run(best_targets[np.newaxis], fee, execution)
            oos_trades = oos_sim.trades(0)
            result["oos"] = {**oos_metrics[best], "trade_stats": trade_statistics(oos_trades, oos_sim.position[0])}
            trade_parts.append(("out_of_sample", oos_trades, oos_sim.position[0], times[split:]))
            oos_equity = equity_table(times[split:], oos_sim.equity[0], oos_sim.position[0])
            result |= position_now(
                out_sample.candles, oos_sim.position[0], oos_trades, best_targets[split:], execution, fee
            )
        if walk:
            walked = walk.finish(combos, spec.walk_forward)
            result["walk_forward"], result["oos"] = walked.summary, walked.stitched
            result["next"] = walked.summary["next"]
            result |= walked.now
            trade_parts = [("out_of_sample", walked.trades, walked.position, walked.open_time)]
        result["sweep"] = [
            {
                "params": combos.params_json(i),
                "execution": combos.execution(i).describe(),
                **in_metrics[i],
                **({"oos": oos_metrics[i]} if oos_metrics else {}),
            }
            for i in range(len(combos))
        ]
    # a walk-forward's reported curve is the stitched out-of-sample one
    equity = walked.equity if walk else equity_table(times[first:split], equity_values, position)
    return result, Curves(equity, trades_table(trade_parts), oos_equity)


def equity_table(open_time: np.ndarray, equity: np.ndarray, position: np.ndarray) -> pa.Table:
    """An equity file's columns: open_time, equity, position."""
    return pa.table(
        {
            "open_time": to_arrow(open_time, pa.timestamp("ms", tz="UTC")),
            "equity": to_arrow(equity, pa.float64()),
            "position": to_arrow(position, pa.int8()),
        }
    )


def _check_lookback(spec: RunSpec, candles: int, where: str) -> None:
    """Refuse a grid whose longest lookback needs more candles than are read up to `where`."""
    strategy, grid = spec.grid.strategy, spec.grid
    need = max(range(len(grid.combos)), key=lambda i: strategy.lookback(grid.combos[i]))
    if candles < strategy.lookback(grid.combos[need]) + 1:
        raise DataError(
            f"{spec.symbol}: {strategy.name} {_labels_text(grid.labels[need])} needs "
            f"{strategy.lookback(grid.combos[need]) + 1} candles up to {where}, only {candles} are available"
        )


def _labels_text(labels: dict[str, str]) -> str:
    return " ".join(f"{name}={label}" for name, label in labels.items())


def write_result(results_url: str, result: dict, curves: Curves) -> None:
    """Store the curves and trades (`backtest.result_files`), then `{symbol}.json` (its presence
    means the pair's files are whole)."""
    folder = resolve(results_url)
    symbol = result["symbol"]
    for name, table in (
        (equity_file, curves.equity),
        (trades_file, curves.trades),
        (oos_equity_file, curves.oos_equity),
    ):
        if table is None:
            delete(folder.join(name(symbol)))  # not an earlier try's
            continue
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="snappy")
        write_bytes_atomic(folder.join(name(symbol)), sink.getvalue().to_pybytes())
    write_bytes_atomic(folder.join(result_file(symbol)), (to_json(result) + "\n").encode())
    delete(folder.join(error_file(symbol)))  # a retry that succeeds supersedes an earlier try's error


def write_error(results_url: str, symbol: str, message: str, exit_code: int) -> None:
    """Record why one pair of a chunk failed, for the leaderboard (`{symbol}.error.json`); an
    earlier try's result of the pair goes, so the leaderboard never ranks a stale one."""
    folder = resolve(results_url)
    record = {"symbol": symbol, "error": message, "exit_code": exit_code}
    delete(folder.join(result_file(symbol)))  # first: its presence means a whole result
    for name in (equity_file, trades_file, oos_equity_file):
        delete(folder.join(name(symbol)))
    write_bytes_atomic(folder.join(error_file(symbol)), (to_json(record) + "\n").encode())


def write_job_record(results_url: str, record: dict) -> None:
    """Record a job's wall time and size under `_jobs/` (the rank step sums them into a cost)."""
    name = check_job_name(record["job_name"])
    write_bytes_atomic(resolve(results_url).join(JOBS_DIR, f"{name}.json"), to_json(record).encode())


def check_job_name(name: str) -> str:
    """BACKTEST_JOB_NAME names the job's record file: a name, never a path (`../x` would write elsewhere)."""
    if not JOB_NAME.fullmatch(name):
        raise InputError(f"invalid BACKTEST_JOB_NAME {name!r}: letters, digits, '-' and '_' only (at most 128)")
    return name


def to_json(result: dict) -> str:
    """Strict JSON: NaN or inf would be a bug upstream, so refuse them rather than print them."""
    return json.dumps(result, allow_nan=False, separators=(", ", ": "))


def _window_text(spec: RunSpec) -> str:
    start = format_time_ms(spec.start_ms) if spec.start_ms is not None else "first candle"
    end = format_time_ms(spec.end_ms) if spec.end_ms is not None else "last candle"
    return f"[{start}, {end})"
