"""Walk-forward analysis (`run --walk-forward TRAIN:TEST[:anchored]`): choose a grid's parameters
on a training window, trade them on the test window that follows, fold after fold, and judge the
strategy on the stitched out-of-sample results only.

Exact semantics (also in docs/walk-forward.md), over the backtest window [S, E), S the open
time of its first candle and E its end:

- Fold k tests [S + TRAIN + k*TEST, min(S + TRAIN + (k+1)*TEST, E)) for every k whose test window
  holds a candle (the last may be shorter). It trains on the TRAIN before its test window; with
  `anchored`, on [S, test start). No fold at all: the window is too short (InputError, exit 2).
- In each fold every combination of the grid is backtested on the training window (flat at its
  start, warmed up by the candles before it); the best by `select_by` on those figures only wins,
  with the grid's rule (the first best in grid order; an undefined value loses). That combination
  alone is then backtested on the test window (flat at its start, warmed up by the bars before).
- The stitched out-of-sample curve is the product of the folds' test equity curves: each fold is
  marked at its last close and the next starts flat. A position open at a fold's end is valued at
  that close without an exit fee; the next fold holds nothing over its first bar and enters at the
  open of its second bar (with the entry fee) if its first bar's signal is long. Its metrics are
  the standard ones on the concatenated test bars (positions, opens and closes concatenated;
  buy-and-hold and gaps over the test span); a trade open at a fold's end is open (no exit fill
  happens), so `win_rate` and the trade statistics leave it out.
- Efficiency (after Pardo's walk-forward efficiency), pooled: the stitched out-of-sample `cagr`
  over the mean of the chosen combinations' in-sample `cagr` on their training windows (over the
  folds where it is defined); None when that mean is not positive (a ratio to a loss or to zero
  means nothing). Per fold, the ratio of its test `cagr` to its training `cagr` (None when that
  is not positive) stays in `folds`, and `efficiency_median` is their median. A mean of per-fold
  ratios is not used: one fold with a tiny positive in-sample `cagr` makes it explode.
- Parameter changes: the folds whose chosen combination differs from the previous fold's, and
  their share of the folds that have a previous fold.

Signals are causal (what the look-ahead check tests), so each combination's signal is computed once
over all candles read and cut into folds: per fold and block of combinations only the training
equity and the one selection metric are computed, the full metrics only for the chosen combination.
For a strategy with a seed or a state, a fold's signals are those computed from the combination's
warm-up before S (more warm-up than a separate run of a later fold would have, never less).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from backtest.data.candles import Candles, to_arrow
from backtest.errors import DataError, InputError
from backtest.params import HOUR_MS, MAX_WINDOW_BARS, duration_hours, format_time_ms, window_label
from backtest.simulation.engine import Segment
from backtest.simulation.execution import Combinations, Execution
from backtest.simulation.metrics import compute_metrics_block, first_best
from backtest.simulation.position import position_now
from backtest.simulation.trade_stats import trade_statistics
from backtest.simulation.trades import Simulation, Trade, stitch

MIN_BARS = 24  # training and test windows: at least a day of hourly bars each
ANCHORED = "anchored"


@dataclass(frozen=True)
class WalkForward:
    """A walk-forward request: training and test window lengths in hourly bars."""

    train_bars: int
    test_bars: int
    anchored: bool = False

    @property
    def text(self) -> str:
        text = f"{window_label(self.train_bars)}:{window_label(self.test_bars)}"
        return f"{text}:{ANCHORED}" if self.anchored else text

    def describe(self) -> dict:
        return {
            "train": window_label(self.train_bars),
            "train_bars": self.train_bars,
            "test": window_label(self.test_bars),
            "test_bars": self.test_bars,
            "anchored": self.anchored,
        }


def parse_walk_forward(text: str) -> WalkForward:
    """`TRAIN:TEST` or `TRAIN:TEST:anchored`, each a duration (180d, 12w, 720h) or a bar count."""
    parts = [part.strip() for part in str(text).split(":")]
    usage = "use TRAIN:TEST or TRAIN:TEST:anchored, e.g. 180d:30d"
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].lower() != ANCHORED):
        raise InputError(f"invalid walk-forward {text!r}: {usage}")
    lengths = []
    for what, part in zip(("training", "test"), parts[:2], strict=True):
        bars = duration_hours(part)  # 0d and -1d are durations too short: the bounds below say so
        if bars is None:
            raise InputError(f"invalid walk-forward {text!r}: the {what} window {part!r} is not a duration; {usage}")
        if not MIN_BARS <= bars <= MAX_WINDOW_BARS:
            raise InputError(
                f"invalid walk-forward {text!r}: the {what} window must be {MIN_BARS} to {MAX_WINDOW_BARS} "
                f"hourly bars (1d to {MAX_WINDOW_BARS // 24}d)"
            )
        lengths.append(bars)
    return WalkForward(lengths[0], lengths[1], anchored=len(parts) == 3)


@dataclass(frozen=True)
class Fold:
    """One fold: times in epoch ms, bars as indices into the candles read."""

    train_start: int
    test_start: int  # also the training window's end
    test_end: int
    train_first: int
    test_first: int
    test_stop: int

    def describe(self) -> dict:
        return {
            "train_start": format_time_ms(self.train_start),
            "train_end": format_time_ms(self.test_start),
            "test_start": format_time_ms(self.test_start),
            "test_end": format_time_ms(self.test_end),
        }


def make_folds(walk: WalkForward, open_time: np.ndarray, start_ms: int, end_ms: int) -> list[Fold]:
    """The folds of the window [start_ms, end_ms) over candles with these open times."""
    folds = []
    train_ms, test_ms = walk.train_bars * HOUR_MS, walk.test_bars * HOUR_MS
    test_start = start_ms + train_ms
    while test_start < end_ms:
        test_end = min(test_start + test_ms, end_ms)
        train_start = start_ms if walk.anchored else test_start - train_ms
        train_first, test_first, test_stop = (
            int(i) for i in np.searchsorted(open_time, [train_start, test_start, test_end])
        )
        if test_stop > test_first:
            if train_first == test_first:
                raise DataError(
                    f"no candles in the training window [{format_time_ms(train_start)}, "
                    f"{format_time_ms(test_start)}) of walk-forward {walk.text}"
                )
            folds.append(Fold(train_start, test_start, test_end, train_first, test_first, test_stop))
        test_start += test_ms
    if not folds:
        days = (end_ms - start_ms) / (24 * HOUR_MS)
        raise InputError(
            f"the window [{format_time_ms(start_ms)}, {format_time_ms(end_ms)}) ({days:.4g} days) is too short "
            f"for walk-forward {walk.text}: no candle after its first {window_label(walk.train_bars)} "
            "training window"
        )
    return folds


@dataclass(frozen=True)
class WalkResult:
    """What a walk-forward adds to a result: the `walk_forward` object, the stitched out-of-sample
    metrics (with their `trade_stats`), the stitched curve as an equity file, and its trades."""

    summary: dict
    stitched: dict
    equity: pa.Table
    trades: list[Trade]
    position: np.ndarray
    open_time: np.ndarray
    now: dict  # `position.position_now` of the last fold's test run: what the run holds next


class Selection:
    """Each fold's best combination on its training window, fed block by block of combinations."""

    def __init__(self, candles: Candles, folds: list[Fold], fee: float, select_by: str):
        self.candles, self.folds, self.fee, self.select_by = candles, folds, fee, select_by
        self.train = [Segment.of(candles, fold.train_first, fold.test_first) for fold in folds]
        self.chosen: list[int | None] = [None] * len(folds)
        self.scores = [-np.inf] * len(folds)
        # the chosen combination's target row and execution
        self.targets: list[tuple[np.ndarray, Execution] | None] = [None] * len(folds)

    def add(
        self, offset: int, targets: np.ndarray, executions: list[Execution], window: Segment, window_run: Simulation
    ) -> None:
        """Consider the combinations offset.. (each row of `targets` traded by each execution:
        combination offset + i * E + e) in every fold.

        `window_run` is their simulation over the whole `window`: a training window that starts at
        the same bar (the first fold's; every fold's when anchored) is its prefix, bit for bit
        (flat at the same bar, then the same products in the same order), so it is not run again."""
        for j, segment in enumerate(self.train):
            if segment.first == window.first:
                sim = window_run.prefix(segment.stop - segment.first)
            else:
                sim = segment.run(targets, self.fee, executions)
            rows = compute_metrics_block(
                sim.equity, sim.position, segment.candles.close, segment.gaps, sim.counts(), names=(self.select_by,)
            )
            i, block_score = first_best(rows, self.select_by)
            if self.chosen[j] is None or block_score > self.scores[j]:
                self.chosen[j], self.scores[j] = offset + i, block_score
                count = len(executions)
                self.targets[j] = (targets[i // count].copy(), executions[i % count])

    def finish(self, combos: Combinations, walk: WalkForward) -> WalkResult:
        """The folds' test runs of their chosen combinations, stitched (see the module docstring)."""
        folds, parts, ratios, in_cagr = [], [], [], []
        for j, fold in enumerate(self.folds):
            target, execution = self.targets[j]
            in_sample = self.train[j].metrics(target[np.newaxis], self.fee, execution)[0][0]
            test = Segment.of(self.candles, fold.test_first, fold.test_stop)
            rows, sim = test.metrics(target[np.newaxis], self.fee, execution)
            out_of_sample = rows[0]
            ratio = efficiency(in_sample["cagr"], out_of_sample["cagr"])
            if ratio is not None:
                ratios.append(ratio)
            if in_sample["cagr"] is not None:
                in_cagr.append(in_sample["cagr"])
            folds.append(
                {
                    **fold.describe(),
                    "params": combos.params_json(self.chosen[j]),
                    "execution": execution.describe(),
                    "in_sample": in_sample,
                    "out_of_sample": out_of_sample,
                    "efficiency": ratio,
                }
            )
            parts.append(sim)
            now = position_now(
                test.candles, sim.position[0], sim.trades(0), target[test.first : test.stop], execution, self.fee
            )
        first, stop = self.folds[0].test_first, self.folds[-1].test_stop
        span = Segment.of(self.candles, first, stop)
        whole = stitch(parts)
        equity, position = whole.equity[0], whole.position[0]
        stitched = compute_metrics_block(whole.equity, whole.position, span.candles.close, span.gaps, whole.counts())[0]
        trades = whole.trades(0)
        stitched["trade_stats"] = trade_statistics(trades, position)
        changes = sum(self.chosen[j] != self.chosen[j - 1] for j in range(1, len(self.folds)))
        in_sample_cagr = _mean(in_cagr)
        summary = {
            **walk.describe(),
            "folds": folds,
            "stitched": stitched,
            "efficiency": efficiency(in_sample_cagr, stitched["cagr"]),
            "efficiency_median": float(np.median(ratios)) if ratios else None,
            "efficiency_folds": len(ratios),
            "in_sample_cagr": in_sample_cagr,
            "next": {"params": folds[-1]["params"], "execution": folds[-1]["execution"]},
            "param_changes": int(changes),
            "param_change_share": changes / (len(self.folds) - 1) if len(self.folds) > 1 else None,
        }
        fold_index = np.repeat(
            np.arange(len(self.folds), dtype=np.int32), [f.test_stop - f.test_first for f in self.folds]
        )
        table = pa.table(
            {
                "open_time": to_arrow(span.candles.open_time, pa.timestamp("ms", tz="UTC")),
                "equity": to_arrow(equity, pa.float64()),
                "position": to_arrow(position, pa.int8()),
                "fold": to_arrow(fold_index, pa.int32()),
            }
        )
        return WalkResult(summary, stitched, table, trades, position, span.candles.open_time, now)


def efficiency(in_sample_cagr: float | None, out_of_sample_cagr: float | None) -> float | None:
    """Walk-forward efficiency: annualised out-of-sample over in-sample return (a fold's, or the
    pooled one); None when the in-sample return is not positive or either is undefined (or the
    ratio overflows)."""
    if in_sample_cagr is None or out_of_sample_cagr is None or in_sample_cagr <= 0:
        return None
    ratio = out_of_sample_cagr / in_sample_cagr
    return ratio if math.isfinite(ratio) else None


def _mean(values: list[float]) -> float | None:
    mean = sum(values) / len(values) if values else math.nan
    return mean if math.isfinite(mean) else None
