"""The execution engine every strategy shares: positions, fills and equity, many combinations at
once as (k, n) arrays.

Exact semantics, for in-window bars t = 0..n-1 (opens o_t, closes c_t), fee f = fee_bps / 10,000
per side, and a strategy's signal_t (decided at bar t's close; `backtest.strategies`):

- A change of signal at bar t fills at the next bar's open o_{t+1}: the position over bar t is
  p_t = signal_{t-1}, and p_0 = 0 (every backtest starts flat). Long/flat only.
- Equity is marked at each close, E_0 = 1, and for t >= 1:
    held  (p_{t-1}=1, p_t=1): E_t = E_{t-1} * c_t / c_{t-1}
    entry (0 -> 1):          E_t = E_{t-1} * (1-f) * c_t / o_t
    exit  (1 -> 0):          E_t = E_{t-1} * (o_t / c_{t-1}) * (1-f)
    flat  (0 -> 0):          E_t = E_{t-1}

Prices near the top of the float64 range (around 1e306) overflow the equity; a non-finite
result is refused as bad data (DataError), never turned into a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backtest.data.candles import Candles, find_gaps
from backtest.simulation.metrics import METRIC_NAMES, compute_metrics_block
from backtest.strategies.exact import require_finite


def positions_from_signals(signals: np.ndarray, first_bar: int, bars: int) -> np.ndarray:
    """p over the bars [first_bar, first_bar+bars) for each row of `signals` (k, n): p_0 = 0, p_t = signal_{t-1}."""
    signals = np.atleast_2d(signals)
    p = np.zeros((len(signals), bars), dtype=bool)
    if bars > 1:
        p[:, 1:] = signals[:, first_bar : first_bar + bars - 1]
    return p


def equity_curves(open_: np.ndarray, close: np.ndarray, positions: np.ndarray, fee: float) -> np.ndarray:
    """E per bar for each row of `positions` (shape (k, n) or (n,)), by the rules above."""
    positions = np.atleast_2d(positions)
    k, n = positions.shape
    equity = np.ones((k, n), dtype=np.float64)
    if n < 2:
        return equity
    keep = 1.0 - fee
    prev, cur = positions[:, :-1], positions[:, 1:]
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        held = close[1:] / close[:-1]
        entry = keep * close[1:] / open_[1:]
        exit_ = (open_[1:] / close[:-1]) * keep
        factor = np.select([prev & cur, cur, prev], [held, entry, exit_], 1.0)
        np.cumprod(factor, axis=1, out=equity[:, 1:])
    require_finite(equity, "equity curve")
    return equity


@dataclass(frozen=True)
class Segment:
    """Bars [first, stop) of the candles read, backtested on their own: flat at `first`, warmed up
    by the signals of the bars before it. A run's window, a hold-out's two parts and each
    walk-forward fold's training and test windows are segments of the same signals."""

    first: int
    stop: int
    candles: Candles  # the segment's bars
    gaps: int

    @classmethod
    def of(cls, candles: Candles, first: int, stop: int) -> Segment:
        part = candles.slice(first, stop)
        return cls(first, stop, part, sum(g.hours for g in find_gaps(part.open_time)))

    def run(self, signals: np.ndarray, fee: float) -> tuple[np.ndarray, np.ndarray]:
        """(positions, equity) of each signal row over this segment."""
        positions = positions_from_signals(signals, self.first, self.stop - self.first)
        return positions, equity_curves(self.candles.open, self.candles.close, positions, fee)

    def metrics(
        self, signals: np.ndarray, fee: float, names: Sequence[str] = METRIC_NAMES
    ) -> tuple[list[dict], np.ndarray, np.ndarray]:
        """(metrics `names` of each signal row, positions, equity) over this segment."""
        positions, equity = self.run(signals, fee)
        part = self.candles
        rows = compute_metrics_block(equity, positions, part.open, part.close, fee, self.gaps, names)
        return rows, positions, equity
