"""Every performance metric of a backtest, computed in one place, formula by formula.

Inputs: the equity curve E_0..E_{n-1} (E_0 = 1), the positions p_t, the in-window opens and
closes, and the fee f per side. Bar returns are R_t = E_t / E_{t-1} - 1 for t >= 1.
All figures are fractions (0.05 = 5 %); annualisation uses 8,760 hourly bars a year.

| metric          | formula                                                                  |
|-----------------|--------------------------------------------------------------------------|
| total_return    | E_last - 1                                                               |
| buy_hold_return | c_last / c_first - 1                                                     |
| cagr            | E_last ^ (8760 / bars) - 1                                               |
| volatility      | std(R, ddof=1) * sqrt(8760)                                              |
| sharpe          | mean(R) / std(R, ddof=1) * sqrt(8760)            (risk-free rate 0)      |
| sortino         | mean(R) * 8760 / (sqrt(mean(min(R, 0)^2)) * sqrt(8760))                  |
| max_drawdown    | max_t (1 - E_t / max_{s<=t} E_s), a positive fraction                    |
| calmar          | cagr / max_drawdown                                                      |
| trades          | number of entry fills (p goes 0 -> 1)                                    |
| win_rate        | share of closed round trips with (o_exit / o_entry) * (1-f)^2 - 1 > 0    |
| exposure        | share of bars with p_t = 1                                               |
| bars            | number of in-window bars                                                 |
| gaps            | missing hourly candles between the window's first and last candle        |

Undefined values are None (JSON null), never NaN or inf: volatility and sharpe with fewer than
two returns, sharpe with zero variance, sortino with no negative return, calmar with no
drawdown, win_rate with no closed round trip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property

import numpy as np

HOURS_PER_YEAR = 8760
METRIC_NAMES = (
    "total_return",
    "buy_hold_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "trades",
    "win_rate",
    "exposure",
    "bars",
    "gaps",
)
SELECT_METRICS = ("total_return", "sharpe", "sortino", "calmar", "cagr", "max_drawdown", "win_rate")  # --select-by
LOWER_IS_BETTER = ("max_drawdown",)
_ANNUAL = math.sqrt(HOURS_PER_YEAR)


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _ratio(numerator: float, denominator: float) -> float | None:
    if denominator == 0:
        return None
    return _finite(numerator / denominator)


def score(metrics: dict, select_by: str) -> float:
    """A backtest's score for choosing by `select_by`: higher is better; undefined values lose."""
    value = metrics[select_by]
    if value is None:
        return -math.inf
    return -value if select_by in LOWER_IS_BETTER else value


def first_best(rows: list[dict], select_by: str) -> tuple[int, float]:
    """(index, score) of the best of `rows` by `select_by`: the first of equals; undefined values lose."""
    scores = [score(row, select_by) for row in rows]
    i = int(np.argmax(scores))
    return i, scores[i]


def _quiet() -> np.errstate:
    """Overflow and 0/0 give inf or NaN, which the formulas report as None: no warnings."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


def compute_metrics_block(
    equity: np.ndarray,
    position: np.ndarray,
    open_: np.ndarray,
    close: np.ndarray,
    fee: float,
    gaps: int,
    names: Sequence[str] = METRIC_NAMES,
) -> list[dict[str, float | int | None]]:
    """The metrics `names` (default: all) of k backtests over the same bars at once: equity and
    position are (k, n). Asking for fewer metrics computes only what they need (a walk-forward
    selects on one metric in every fold), by the same formulas."""
    block = _Block(equity, position, open_, close, fee, gaps)
    columns = [getattr(block, name)() for name in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


class _Block:
    """k backtests over the same bars. Each metric is a method returning its k values; the
    intermediate arrays they share (bar returns, their mean, the running peak) are computed once,
    when first needed."""

    def __init__(
        self, equity: np.ndarray, position: np.ndarray, open_: np.ndarray, close: np.ndarray, fee: float, gaps: int
    ):
        self.equity, self.position, self.open, self.close, self.fee = equity, position, open_, close, fee
        self.gap_count = gaps
        self.k, self.bar_count = equity.shape

    # -- shared intermediates (None where a metric is undefined for lack of returns) --

    @cached_property
    def _returns(self) -> np.ndarray:
        with _quiet():
            return self.equity[:, 1:] / self.equity[:, :-1] - 1.0

    @cached_property
    def _mean(self) -> np.ndarray:
        with _quiet():
            return np.mean(self._returns, axis=1)

    @cached_property
    def _std(self) -> np.ndarray:
        with _quiet():
            return np.std(self._returns, axis=1, ddof=1)

    @cached_property
    def _cagr(self) -> list[float | None]:
        with _quiet():
            cagr = self.equity[:, -1] ** (HOURS_PER_YEAR / self.bar_count) - 1.0
        return [_finite(value) for value in cagr]

    @cached_property
    def _drawdown(self) -> np.ndarray:
        with _quiet():
            return np.max(1.0 - self.equity / np.maximum.accumulate(self.equity, axis=1), axis=1)

    @cached_property
    def _trips(self) -> list[tuple[int, float | None]]:
        return [_round_trips(self.position[i], self.open, self.fee) for i in range(self.k)]

    # -- the metrics, one formula each (see the module docstring's table) --

    def total_return(self) -> list[float | None]:
        with _quiet():
            return [_finite(value) for value in self.equity[:, -1] - 1.0]

    def buy_hold_return(self) -> list[float | None]:
        with _quiet():
            return [_finite(self.close[-1] / self.close[0] - 1.0)] * self.k

    def cagr(self) -> list[float | None]:
        return self._cagr

    def volatility(self) -> list[float | None]:
        if self._returns.shape[1] < 2:
            return [None] * self.k
        return [_finite(float(std) * _ANNUAL) for std in self._std]

    def sharpe(self) -> list[float | None]:
        if self._returns.shape[1] < 2:
            return [None] * self.k
        return [_ratio(float(mean) * _ANNUAL, float(std)) for mean, std in zip(self._mean, self._std, strict=True)]

    def sortino(self) -> list[float | None]:
        if not self._returns.shape[1]:
            return [None] * self.k
        with _quiet():
            downside = np.sqrt(np.mean(np.minimum(self._returns, 0.0) ** 2, axis=1))
        return [
            _ratio(float(mean) * HOURS_PER_YEAR, float(down) * _ANNUAL)
            for mean, down in zip(self._mean, downside, strict=True)
        ]

    def max_drawdown(self) -> list[float | None]:
        return [_finite(float(drawdown)) for drawdown in self._drawdown]

    def calmar(self) -> list[float | None]:
        return [
            _ratio(cagr, float(drawdown)) if cagr is not None and float(drawdown) > 0 else None
            for cagr, drawdown in zip(self._cagr, self._drawdown, strict=True)
        ]

    def trades(self) -> list[int]:
        return [trades for trades, _ in self._trips]

    def win_rate(self) -> list[float | None]:
        return [win_rate for _, win_rate in self._trips]

    def exposure(self) -> list[float]:
        return [float(value) for value in np.mean(self.position, axis=1)]

    def bars(self) -> list[int]:
        return [int(self.bar_count)] * self.k

    def gaps(self) -> list[int]:
        return [int(self.gap_count)] * self.k


def _round_trips(position: np.ndarray, open_: np.ndarray, fee: float) -> tuple[int, float | None]:
    """(entries, win rate of the closed round trips) of one position series."""
    entries = np.nonzero(position[1:] & ~position[:-1])[0] + 1
    exits = np.nonzero(~position[1:] & position[:-1])[0] + 1
    closed = len(exits)  # p_0 = 0, so the k-th exit closes the k-th entry
    win_rate = None
    if closed:
        trip_returns = (open_[exits] / open_[entries[:closed]]) * (1.0 - fee) ** 2 - 1.0
        win_rate = float(np.mean(trip_returns > 0))
    return len(entries), win_rate
