"""The look-ahead check: proof, on given candles, that a strategy's signals are causal and that
its declared warm-up is enough (`python -m backtest check-strategy NAME`).

(a) Truncation: for many cut points m, the signals computed from candles 0..m-1 alone equal the
    first m signals computed from all candles. A strategy that reads any later candle (say
    c_{t+1}) changes some bar's signal when that candle is removed.
(b) Warm-up: the window starts at bar W = 2 x warmup; its signals computed from the candles
    read from W - warmup (what a run reads) and from W - 2 x warmup must agree on every bar for
    a fixed-lookback strategy, and on all but `SEEDED_TOLERANCE` of the window's bars for one
    with a seed or a state (`Strategy.seeded`), whose influence only fades.

The first failure is reported with the offending bar and its time. Because signals are causal,
a run can compute each combination's signal once over all candles read and cut it into
in-sample, out-of-sample and walk-forward folds.
"""

from __future__ import annotations

import numpy as np

from backtest.data.candles import Candles, read_candle_file
from backtest.data.storage import resolve
from backtest.data.synthetic import EPOCH_MS, synthetic_candles
from backtest.errors import DataError
from backtest.params import HOUR_MS, format_time_ms
from backtest.strategies.contract import Combo, Strategy
from backtest.strategies.grid import Grid

SEEDED_TOLERANCE = 0.01  # share of the window's bars a seeded/stateful strategy may change with 2x warm-up
MIN_WINDOW_BARS = 1000  # bars after the doubled warm-up, for check (b)
MAX_COMBOS_CHECKED = 12  # a grid is checked at its first and last combination and evenly between
CHECK_SYMBOL = "CHECKUSDT"


def check_candles(input_url: str | None, bars: int = 0) -> Candles:
    """The candles to check on: a file, or `bars` synthetic hourly candles."""
    if input_url:
        return read_candle_file(resolve(input_url))
    return synthetic_candles(CHECK_SYMBOL, EPOCH_MS, EPOCH_MS + bars * HOUR_MS)


def checked_combos(grid: Grid, limit: int = MAX_COMBOS_CHECKED) -> list[int]:
    n = len(grid.combos)
    count = min(limit, n)
    return sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)})


def check_grid(grid: Grid, candles: Candles | None = None, cuts: int = 60, input_url: str | None = None) -> dict:
    """Check (a) and (b) for a spread of the grid's combinations; `ok` False names the first problem."""
    strategy = grid.strategy
    indices = checked_combos(grid)
    need = max(2 * strategy.warmup_bars(grid.combos[i]) + MIN_WINDOW_BARS for i in indices)
    if candles is None:
        candles = check_candles(input_url, need)
    report = {"strategy": strategy.name, "candles": len(candles), "cuts": cuts, "checked": [], "ok": True}
    for i in indices:
        combo = grid.combos[i]
        entry: dict = {"params": grid.params_json(i)}
        problem = truncation_problem(strategy, combo, candles, cuts) or warmup_problem(strategy, combo, candles, entry)
        entry["ok"] = problem is None
        report["checked"].append(entry)
        if problem:
            report.update(ok=False, problem=f"{' '.join([strategy.name, *_labels(grid.labels[i])])}: {problem}")
            break
    return report


def truncation_problem(strategy: Strategy, combo: Combo, candles: Candles, cuts: int) -> str | None:
    """Check (a): the first bar whose signal changes when later candles are removed, or None."""
    n = len(candles)
    full = _signal(strategy, combo, candles)
    start = min(strategy.lookback(combo) + 1, n)
    points = sorted({int(m) for m in np.linspace(start, n - 1, max(cuts, 2))} | {n - 1, n - 2} - {0, 1})
    for m in points:
        part = _signal(strategy, combo, candles.slice(0, m))
        differs = np.nonzero(part != full[:m])[0]
        if len(differs):
            t = int(differs[0])
            return (
                f"looks ahead: the signal at bar {t} ({_time(candles, t)}) is {int(full[t])} with all candles "
                f"but {int(part[t])} when the candles from bar {m} ({_time(candles, m)}) on are removed"
            )
    return None


def warmup_problem(strategy: Strategy, combo: Combo, candles: Candles, counts: dict | None = None) -> str | None:
    """Check (b): the first window bar a doubled warm-up changes (beyond the tolerance), or None.

    `counts`, when given, receives how many window bars changed (`warmup_changed`) of how many
    (`window_bars`): the measured share, reported even when it is within the tolerance."""
    warmup = strategy.warmup_bars(combo)
    window_start = 2 * warmup
    if len(candles) - window_start < MIN_WINDOW_BARS:
        raise DataError(
            f"{len(candles)} candles are too few to check a warm-up of {warmup} bars: "
            f"need {window_start + MIN_WINDOW_BARS}"
        )
    declared = _signal(strategy, combo, candles.slice(window_start - warmup, len(candles)))[warmup:]
    doubled = _signal(strategy, combo, candles)[window_start:]
    differs = np.nonzero(declared != doubled)[0]
    if counts is not None:
        counts.update(warmup_changed=len(differs), window_bars=len(declared))
    allowed = int(SEEDED_TOLERANCE * len(declared)) if strategy.seeded else 0
    if len(differs) > allowed:
        t = int(differs[0]) + window_start
        share = len(differs) / len(declared)
        allowed_text = f"at most {SEEDED_TOLERANCE:.0%}" if strategy.seeded else "none"
        return (
            f"warm-up too short: with {warmup} bars declared, {len(differs)} window bars ({share:.2%}; allowed: {allowed_text}) "
            f"change when {2 * warmup} are read, the first at bar {t} ({_time(candles, t)})"
        )
    return None


def _signal(strategy: Strategy, combo: Combo, candles: Candles) -> np.ndarray:
    return strategy.checked_signals(candles, [combo])[0]


def _time(candles: Candles, t: int) -> str:
    return format_time_ms(int(candles.open_time[t])) if t < len(candles) else "end"


def _labels(labels: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in labels.items()]
