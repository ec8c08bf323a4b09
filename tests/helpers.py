"""Small builders shared by the tests."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from backtest.candles import Candles
from backtest.params import HOUR_MS

T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS  # 2023-11-14T22:00Z


def make_candles(opens, closes, start_ms: int = T0, volume: float = 1.0) -> Candles:
    """Valid candles from opens and closes (high/low just outside them), hourly from start."""
    o = np.asarray(opens, dtype=np.float64)
    c = np.asarray(closes, dtype=np.float64)
    t = start_ms + np.arange(len(c), dtype=np.int64) * HOUR_MS
    return Candles(t, o, np.maximum(o, c) * 1.01, np.minimum(o, c) * 0.99, c, np.full(len(c), volume))


def reference_backtest(opens, closes, window: int, first_bar: int, fee: float) -> tuple[list[int], list[float]]:
    """The strategy written as a plain loop straight from the spec (exact SMA comparison)."""
    signal = []
    for t in range(len(closes)):
        if t < window - 1:
            signal.append(0)
            continue
        total = sum(Fraction(x) for x in closes[t - window + 1 : t + 1])
        signal.append(1 if Fraction(closes[t]) * window > total else 0)
    o, c = opens[first_bar:], closes[first_bar:]
    positions = [0] + [signal[first_bar + t - 1] for t in range(1, len(c))]
    equity = [1.0]
    for t in range(1, len(c)):
        prev, cur, e = positions[t - 1], positions[t], equity[-1]
        if prev and cur:
            e = e * c[t] / c[t - 1]
        elif cur:
            e = e * (1 - fee) * c[t] / o[t]
        elif prev:
            e = e * (o[t] / c[t - 1]) * (1 - fee)
        equity.append(e)
    return positions, equity
