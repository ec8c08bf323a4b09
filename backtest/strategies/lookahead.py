"""The look-ahead check (`python -m backtest check-strategy NAME`, and `plan`'s quick one): on
given candles, for up to 12 combinations of a grid, that the signals a run uses are the ones a
live trader could have computed, and that the declared warm-up is enough.

Notation, for one combination on n candles: f_t is the signal at bar t computed from all the
candles (what a run uses); g_t is the signal at bar t computed from candles 0..t alone (the live
signal). A signal is a target: bool (True = +1) or int8 in {-1, 0, 1} (`targets`); f and g are
compared as targets (True equals 1), so a peek on the short side alone is a difference like any
other. A strategy is causal on these candles when f_t = g_t at every bar a run can trade, on
either side.

(a) Truncation. A cut at bar t computes the signals from candles 0..t and compares all t + 1 of
    them with f_0..f_t (the last of them is g_t, so f_t = g_t is tested). Cuts are taken from T0 = the strategy's
    lookback (the first bar whose signal is defined; a run trades no earlier bar) to n - 2 (a
    cut at n - 1 keeps every candle), ascending; the first difference fails the check, naming
    the bar and the cut. The cut set (`cut_bars`):
    - `sampled`: N bars evenly spaced from T0 to n - 2, both included (`--cuts N`, default 60;
      plan 12; N above the number of bars is every bar);
    - `changes`: every bar t where the target changes (f_t != f_{t-1}: an entry, an exit or a
      reversal, on either side) and the bar before it;
    - `--cuts all`: every bar from T0 to n - 2 (then the other kinds add nothing).

    What a pass guarantees, on these candles for each combination checked:
    - with `--cuts all`: f_t = g_t at every bar from T0 on. The run's signals are exactly the
      live ones: any peek that changes any signal fails.
    - with the default cuts: every change of the run's signal after T0 (each entry, exit and
      reversal) is a change of the live signal at the same bar, to the same value, and f_t = g_t at
      every bar from T0 on except, possibly, on a stretch a..b through which the run's signal
      does not change at all (f constant from a - 1 to b + 1) while the live signal differs
      from it on a..b and agrees at a - 1 and b + 1: whole episodes of the live signal that the
      run's signal skips (a peek that, say, leaves out whole exactly the trades, long or short,
      that will lose). Such a peek creates and moves no change of f, so only a cut
      inside a..b catches it: a sampled one when it falls there, always `--cuts all`.
    Why: take a maximal stretch a..b of bars where f != g. a >= T0 + 1 (T0 is cut) and
    b <= n - 2 (f_{n-1} = g_{n-1}). If f changes at a bar c in a..b + 1, the cut at c (c <= b)
    or at the bar before it (c = b + 1) lies in a..b and sees f != g. So a stretch no cut sees
    has f constant from a - 1 to b + 1. (At the cuts t and t - 1 around a change, f = g: the
    live signal changes there too.)
    Not covered: other candles (a peek that changes no signal on these candles is harmless here
    but may not be elsewhere), the combinations of a grid that are not checked, bars before T0.
    Cost: one strategy run per cut, on candles 0..t: O(cuts x bars); the changes add two cuts
    per change of the signal (`benchmarks/bench_lookahead.py` measures it).
(b) Warm-up: with W the declared warm-up and R = W + max(W, MIN_WARMUP_MARGIN) bars, the window
    starts at bar R; its signals computed from the candles read from R - W (what a run reads)
    and from 0 (R bars read, at least MIN_WARMUP_MARGIN more than declared, so that a warm-up
    of 0 or one too small is tested too) must agree on every bar for a fixed-lookback
    strategy, and on all but `SEEDED_TOLERANCE` of the window's bars for one with a seed or a
    state (`Strategy.seeded`), whose influence only fades.

The first failure is reported with the offending bar and its time. Because a strategy that
passes is taken as causal (within the guarantee above), a run can compute each combination's signal once over all candles read and cut it into
in-sample, out-of-sample and walk-forward folds.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np

from backtest.data.candles import Candles, read_candle_file
from backtest.data.storage import resolve
from backtest.data.synthetic import EPOCH_MS, synthetic_candles
from backtest.errors import DataError, InputError
from backtest.params import HOUR_MS, format_time_ms
from backtest.strategies.contract import Combo, Strategy
from backtest.strategies.grid import Grid

SEEDED_TOLERANCE = 0.01  # share of the window's bars a seeded/stateful strategy may change with a longer warm-up
MIN_WINDOW_BARS = 1000  # bars after the longer warm-up, for check (b)
MIN_WARMUP_MARGIN = 100  # check (b) reads at least this many bars more than the declared warm-up
MAX_COMBOS_CHECKED = 12  # a grid is checked at its first and last combination and evenly between
DEFAULT_CUTS = 60  # sampled cuts of check-strategy (plan: backtest_airflow.run_strategies.LOOKAHEAD_CUTS)
ALL = "all"  # cut at every bar
CHECK_SYMBOL = "CHECKUSDT"

Cuts = int | Literal["all"]


def parse_cuts(text: str | int) -> Cuts:
    """`--cuts`: a whole number >= 1 of sampled cuts, or `all` (every bar); anything else is an input error."""
    value = str(text).strip()
    if value.lower() == ALL:
        return ALL
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise InputError(f"invalid --cuts {text!r}: must be a whole number of at least 1, or {ALL}")
    if int(value) < 1:
        raise InputError(f"invalid --cuts {text!r}: must be at least 1 (or {ALL}: every bar)")
    return int(value)


def check_candles(input_url: str | None, bars: int = 0) -> Candles:
    """The candles to check on: a file, or `bars` synthetic hourly candles."""
    if input_url:
        return read_candle_file(resolve(input_url))
    return synthetic_candles(CHECK_SYMBOL, EPOCH_MS, EPOCH_MS + bars * HOUR_MS)


def checked_combos(grid: Grid, limit: int = MAX_COMBOS_CHECKED) -> list[int]:
    n = len(grid.combos)
    count = min(limit, n)
    return sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)})


def reference_warmup(warmup: int) -> int:
    """Check (b)'s longer warm-up: twice the declared one, and at least MIN_WARMUP_MARGIN bars more."""
    return warmup + max(warmup, MIN_WARMUP_MARGIN)


def check_grid(
    grid: Grid,
    candles: Candles | None = None,
    cuts: Cuts = DEFAULT_CUTS,
    input_url: str | None = None,
    at_changes: bool = True,
) -> dict:
    """Check (a) and (b) for a spread of the grid's combinations; `ok` False names the first problem.

    `at_changes` False leaves out the cuts at the signal's changes (the sampled cuts alone: the
    check as it was before, kept for the benchmark's comparison)."""
    cuts = parse_cuts(cuts)
    strategy = grid.strategy
    indices = checked_combos(grid)
    need = max(reference_warmup(strategy.warmup_bars(grid.combos[i])) + MIN_WINDOW_BARS for i in indices)
    if candles is None:
        candles = check_candles(input_url, need)
    kinds = [ALL] if cuts == ALL else ["sampled", *(["changes"] if at_changes else [])]
    report = {"strategy": strategy.name, "candles": len(candles), "cuts": cuts, "cut_kinds": kinds, "checked": []}
    report.update(cut_points=0, ok=True)
    for i in indices:
        combo = grid.combos[i]
        entry: dict = {"params": grid.params_json(i)}
        problem = truncation_problem(strategy, combo, candles, cuts, entry, at_changes) or warmup_problem(
            strategy, combo, candles, entry
        )
        entry["ok"] = problem is None
        report["checked"].append(entry)
        report["cut_points"] += entry["cut_points"]["checked"]
        if problem:
            report.update(ok=False, problem=f"{' '.join([strategy.name, *_labels(grid.labels[i])])}: {problem}")
            break
    return report


def cut_bars(full: np.ndarray, first: int, cuts: Cuts, at_changes: bool = True) -> dict[str, np.ndarray]:
    """Check (a)'s cuts by kind: the bars t from `first` to len(full) - 2 whose candles 0..t are kept."""
    last = len(full) - 2
    if last < first:
        return {}
    if cuts == ALL:
        return {ALL: np.arange(first, last + 1)}
    count = min(max(cuts, 2), last - first + 1)  # first and last always; never more than the bars
    kinds = {"sampled": np.unique(np.linspace(first, last, count).round().astype(np.int64))}
    if at_changes:
        changed = np.flatnonzero(full[1:] != full[:-1]) + 1  # f_t != f_{t-1}
        both = np.union1d(changed, changed - 1)
        kinds["changes"] = both[(both >= first) & (both <= last)]
    return kinds


def truncation_problem(
    strategy: Strategy,
    combo: Combo,
    candles: Candles,
    cuts: Cuts = DEFAULT_CUTS,
    counts: dict | None = None,
    at_changes: bool = True,
) -> str | None:
    """Check (a): the first bar whose signal changes when later candles are removed, or None.

    `counts`, when given, receives `cut_points`: how many cuts of each kind, the distinct total,
    and how many were run (`checked`: the total, unless a cut failed)."""
    n = len(candles)
    full = _signal(strategy, combo, candles)
    kinds = cut_bars(full, min(strategy.lookback(combo), n), cuts, at_changes)
    points = np.unique(np.concatenate([np.empty(0, np.int64), *kinds.values()]))
    summary = {kind: len(bars) for kind, bars in kinds.items()} | {"total": len(points), "checked": 0}
    if counts is not None:
        counts["cut_points"] = summary
    for t in points.tolist():
        summary["checked"] += 1
        part = _signal(strategy, combo, candles.slice(0, t + 1))
        differs = np.flatnonzero(part != full[: t + 1])
        if len(differs):
            s = int(differs[0])
            return (
                f"looks ahead: the signal at bar {s} ({_time(candles, s)}) is {int(full[s])} with all candles "
                f"but {int(part[s])} when the candles from bar {t + 1} ({_time(candles, t + 1)}) on are removed"
            )
    return None


def warmup_problem(strategy: Strategy, combo: Combo, candles: Candles, counts: dict | None = None) -> str | None:
    """Check (b): the first window bar a longer warm-up changes (beyond the tolerance), or None.

    `counts`, when given, receives how many window bars changed (`warmup_changed`) of how many
    (`window_bars`): the measured share, reported even when it is within the tolerance."""
    warmup = strategy.warmup_bars(combo)
    window_start = reference_warmup(warmup)
    if len(candles) - window_start < MIN_WINDOW_BARS:
        raise DataError(
            f"{len(candles)} candles are too few to check a warm-up of {warmup} bars: "
            f"need {window_start + MIN_WINDOW_BARS}"
        )
    declared = _signal(strategy, combo, candles.slice(window_start - warmup, len(candles)))[warmup:]
    longer = _signal(strategy, combo, candles)[window_start:]
    differs = np.flatnonzero(declared != longer)
    if counts is not None:
        counts.update(warmup_changed=len(differs), window_bars=len(declared))
    allowed = int(SEEDED_TOLERANCE * len(declared)) if strategy.seeded else 0
    if len(differs) > allowed:
        t = int(differs[0]) + window_start
        share = len(differs) / len(declared)
        allowed_text = f"at most {SEEDED_TOLERANCE:.0%}" if strategy.seeded else "none"
        return (
            f"warm-up too short: with {warmup} bars declared, {len(differs)} window bars ({share:.2%}; allowed: {allowed_text}) "
            f"change when {window_start} are read, the first at bar {t} ({_time(candles, t)})"
        )
    return None


def _signal(strategy: Strategy, combo: Combo, candles: Candles) -> np.ndarray:
    return strategy.checked_signals(candles, [combo])[0]


def _time(candles: Candles, t: int) -> str:
    return format_time_ms(int(candles.open_time[t])) if t < len(candles) else "end"


def _labels(labels: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in labels.items()]
