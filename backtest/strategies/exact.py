"""Exact comparisons of moving sums on float64 closes, for the built-ins' signals.

The sign of `c_t - SMA_t` (`sma_sign`: above, below or a tie) and of `SMA_fast - SMA_slow` is
decided exactly on the float64 inputs: a fast rolling sum from one cumulative sum, and for the
rare bars where its rounding error could flip the answer (flat prices, exact ties) an exact
sum. The error bound is symmetric, so a bar outside it has the sign of its float difference on
either side. So a signal never depends on summation order.

Prices near the top of the float64 range (around 1e306) overflow those sums; a non-finite
intermediate result is refused as bad data (DataError), never turned into a result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from backtest.errors import DataError

UNIT_ROUNDOFF = 2.0**-53


def require_finite(values: np.ndarray, what: str) -> None:
    if not np.isfinite(values).all():
        raise DataError(f"prices out of range for float64 arithmetic: the {what} overflows")


@dataclass(frozen=True)
class PrefixSums:
    """[0, c_0, c_0+c_1, ...] and a bound on each one's rounding error, shared by all windows."""

    sums: np.ndarray
    error_bound: np.ndarray

    @classmethod
    def of(cls, close: np.ndarray) -> PrefixSums:
        sums = np.empty(len(close) + 1, dtype=np.float64)
        sums[0] = 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            np.cumsum(close, out=sums[1:])
        require_finite(sums, "running sum of the closes")
        # Recursive summation of positive terms: |error of sums[k]| <= k * u * sums[k].
        return cls(sums, UNIT_ROUNDOFF * np.arange(len(sums), dtype=np.float64) * sums)


def sma_sign(close: np.ndarray, window: int, prefix: PrefixSums | None = None) -> np.ndarray:
    """sign(c_t - mean(c_{t-w+1..t})) for every bar, exactly, as int8: +1 above, -1 below, 0 on
    a tie and before bar w-1."""
    n = len(close)
    sign = np.zeros(n, dtype=np.int8)
    if n < window:
        return sign
    prefix = PrefixSums.of(close) if prefix is None else prefix
    cs, err_cs = prefix.sums, prefix.error_bound
    with np.errstate(over="ignore", invalid="ignore"):
        sums = cs[window:] - cs[:-window]
        scaled = window * close[window - 1 :]
        diff = scaled - sums  # > 0 exactly when c_t > SMA_t (< 0: below), up to rounding
    require_finite(diff, f"{window}-bar moving sum")
    # Error bound of the two prefix sums, the subtraction, the product and the final
    # difference, doubled for slack.
    tol = 2.0 * (err_cs[window:] + err_cs[:-window] + UNIT_ROUNDOFF * (np.abs(sums) + scaled + np.abs(diff)))
    decided = sign[window - 1 :]
    np.subtract((diff > 0).view(np.int8), (diff < 0).view(np.int8), out=decided)
    for i in np.nonzero(np.abs(diff) <= tol)[0]:
        t = i + window - 1
        exact = math.fsum([close[t]] * window + [-x for x in close[t - window + 1 : t + 1]])  # its sign is exact
        decided[i] = (exact > 0) - (exact < 0)
    return sign


def above_sma(close: np.ndarray, window: int, prefix: PrefixSums | None = None) -> np.ndarray:
    """signal_t = c_t > mean(c_{t-w+1..t}) for every bar, exactly; False before bar w-1."""
    return sma_sign(close, window, prefix) > 0


def exact_integers(values: list[float]) -> tuple[list[int], int]:
    """Each float as an integer over one common power of two: (integers, that power), exactly."""
    ratios = [x.as_integer_ratio() for x in values]
    scale = max((den for _, den in ratios), default=1)  # powers of two: x = num * (scale/den) / scale
    return [num * (scale // den) for num, den in ratios], scale


def exact_mean(values: list[float]) -> float:
    """The mean of floats, correctly rounded (Python's int / int is): equal values give that value."""
    integers, scale = exact_integers(values)
    return sum(integers) / (scale * len(integers))


class ExactPrefix:
    """Exact prefix sums of the closes as Python integers (each close times one power of two),
    built on first use: the rare bars where float rounding could flip a comparison."""

    def __init__(self, close: np.ndarray):
        self._close = close
        self._sums: list[int] | None = None

    def _prefix(self) -> list[int]:
        if self._sums is None:
            self._sums = [0, *accumulate(exact_integers(self._close.tolist())[0])]
        return self._sums

    def cross(self, t: int, f: int, s: int) -> int:
        """The sign of s * sum(c_{t-f+1..t}) - f * sum(c_{t-s+1..t}), exactly."""
        p = self._prefix()
        return s * (p[t + 1] - p[t + 1 - f]) - f * (p[t + 1] - p[t + 1 - s])
