"""Every performance metric of a backtest, computed in one place, formula by formula.

Inputs: the equity curve E_0..E_{n-1} (E_0 = 1), the positions p_t in {-1, 0, 1}, the in-window
closes, and the counts of the trades (`TradeCounts`, from the engine's trade log; a trade's
return is defined in `backtest.simulation.engine`). Bar returns are R_t = E_t / E_{t-1} - 1 for
t >= 1, and R_t = 0 after a ruin (E_{t-1} = 0).
All figures are fractions (0.05 = 5 %); annualisation uses 8,760 hourly bars a year.

| metric          | formula                                                                  |
|-----------------|--------------------------------------------------------------------------|
| total_return    | E_last - 1                                                               |
| buy_hold_return | c_last / c_first - 1                                                     |
| cagr            | E_last ^ (8760 / bars) - 1                                               |
| volatility      | std(R, ddof=1) * sqrt(8760)                                              |
| sharpe          | mean(R) / std(R, ddof=1) * sqrt(8760)            (risk-free rate 0)      |
| sortino         | mean(R) * 8760 / (sqrt(mean(min(R, 0)^2)) * sqrt(8760))                  |
| psr             | Phi(S sqrt(T-1) / sqrt(1 - g3 S + (g4-1)/4 S^2)), see below              |
| max_drawdown    | max_t (1 - E_t / max_{s<=t} E_s), a positive fraction                    |
| calmar          | cagr / max_drawdown                                                      |
| trades          | number of entries (trades opened)                                        |
| long_trades     | entries of long trades                                                   |
| short_trades    | entries of short trades                                                  |
| win_rate        | share of closed trades whose return is > 0                               |
| exits           | closed trades by exit kind: {signal, stop, take_profit, ruin}            |
| exposure        | share of bars with p_t != 0                                              |
| bars            | number of in-window bars                                                 |
| gaps            | missing hourly candles between the window's first and last candle        |

psr, the probabilistic Sharpe ratio (Bailey & Lopez de Prado, 2012/2014): the probability that
the true Sharpe exceeds 0 given T = n-1 returns, their per-bar Sharpe S = mean(R)/std(R, ddof=1),
skewness g3 = m3/m2^1.5 and kurtosis g4 = m4/m2^2 (m_k = mean((R - mean R)^k), population
moments, not excess). `deflated_sharpe` is the same with S - SR0 in the numerator (a grid's
chosen combination, see there).

Undefined values are None (JSON null), never NaN or inf: volatility and sharpe with fewer than
two returns, sharpe with zero variance, sortino with no negative return, calmar with no
drawdown, win_rate with no closed trade, psr also when its radicand is not positive. Long/flat without stops, a trade is a round trip from
an entry at o_entry to an exit at o_exit, and its return (o_exit / o_entry) * (1-f)^2 - 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from statistics import NormalDist

import numpy as np

from backtest.simulation.execution import EXIT_KINDS

HOURS_PER_YEAR = 8760
METRIC_NAMES = (
    "total_return",
    "buy_hold_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "psr",
    "max_drawdown",
    "calmar",
    "trades",
    "long_trades",
    "short_trades",
    "win_rate",
    "exits",
    "exposure",
    "bars",
    "gaps",
)
EXIT_COLUMNS = tuple(f"exits_{kind}" for kind in EXIT_KINDS)  # `exits` as table columns
# The metrics as flat table columns (a leaderboard, a grid file): `exits` as exits_signal, ...
FLAT_METRIC_NAMES = tuple(column for name in METRIC_NAMES for column in (EXIT_COLUMNS if name == "exits" else (name,)))
SELECT_METRICS = ("total_return", "sharpe", "sortino", "calmar", "cagr", "max_drawdown", "win_rate")  # --select-by
LOWER_IS_BETTER = ("max_drawdown",)
_ANNUAL = math.sqrt(HOURS_PER_YEAR)
EULER_GAMMA = 0.5772156649
_NORMAL = NormalDist()


@dataclass(frozen=True)
class TradeCounts:
    """Per backtest (k of each): trades opened (all, long, short), closed, closed with a return
    > 0, and closed by each exit kind (k, 4), in EXIT_KINDS order."""

    entries: np.ndarray
    long_entries: np.ndarray
    short_entries: np.ndarray
    closed: np.ndarray
    wins: np.ndarray
    exits: np.ndarray


def flat_metrics(metrics: dict) -> dict:
    """A result's metrics as FLAT_METRIC_NAMES columns (None where absent, as in an older result)."""
    exits = metrics.get("exits") or {}
    flat = {**metrics, **{f"exits_{kind}": exits.get(kind) for kind in EXIT_KINDS}}
    return {name: flat.get(name) for name in FLAT_METRIC_NAMES}


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


def probabilistic_sharpe(sharpe: float, count: int, skew: float, kurt: float, benchmark: float = 0.0) -> float | None:
    """P(true Sharpe > benchmark) for a per-bar Sharpe `sharpe` of `count` returns with skewness
    `skew` and (non-excess) kurtosis `kurt`: Phi((S - SR*) sqrt(T-1) / sqrt(1 - g3 S + (g4-1)/4 S^2));
    None when undefined (fewer than 2 returns, a radicand that is not positive, non-finite inputs)."""
    if count < 2 or not all(map(math.isfinite, (sharpe, skew, kurt, benchmark))):
        return None
    radicand = 1.0 - skew * sharpe + (kurt - 1.0) / 4.0 * sharpe * sharpe
    if not radicand > 0:
        return None
    z = (sharpe - benchmark) * math.sqrt(count - 1) / math.sqrt(radicand)
    return _finite(_NORMAL.cdf(z)) if math.isfinite(z) else None


def expected_max_sharpe(sharpes: Sequence[float | None], trials: int) -> float | None:
    """SR0: the per-bar Sharpe the best of `trials` independent tries reaches by luck alone,
    sqrt(V) ((1-g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e))), V the variance (ddof 1) of the tries'
    defined per-bar Sharpes, g Euler-Mascheroni; None for one trial or fewer than 2 defined."""
    values = [value for value in sharpes if value is not None]
    if trials < 2 or len(values) < 2:
        return None
    mean = math.fsum(values) / len(values)
    variance = math.fsum((value - mean) ** 2 for value in values) / (len(values) - 1)
    quantiles = (1 - EULER_GAMMA) * _NORMAL.inv_cdf(1 - 1 / trials)
    quantiles += EULER_GAMMA * _NORMAL.inv_cdf(1 - 1 / (trials * math.e))
    return _finite(math.sqrt(variance) * quantiles)


def return_moments(equity: np.ndarray) -> tuple[float, int, float, float] | None:
    """(per-bar Sharpe, T, skewness, kurtosis) of one equity curve's bar returns (as the metrics
    define R_t), or None when the Sharpe is undefined."""
    with _quiet():
        returns = np.divide(equity[1:], equity[:-1]) - 1.0
    returns[equity[:-1] == 0.0] = 0.0  # after a ruin: no return
    if len(returns) < 2:
        return None
    deviation = returns - returns.mean()
    m2, m3, m4 = (float(np.mean(deviation**p)) for p in (2, 3, 4))
    std = float(np.std(returns, ddof=1))
    if not std > 0:
        return None
    return float(returns.mean()) / std, len(returns), m3 / m2**1.5, m4 / (m2 * m2)


def deflated_sharpe(
    equity: np.ndarray, sharpes: Sequence[float | None], trials: int
) -> tuple[float | None, float | None]:
    """(dsr, SR0) of a grid's chosen combination: the psr of its curve `equity` against SR0 of
    the `trials` combinations, whose annualised Sharpes are `sharpes` (None: undefined)."""
    sr0 = expected_max_sharpe([None if s is None else s / _ANNUAL for s in sharpes], trials)
    moments = return_moments(equity)
    if sr0 is None or moments is None:
        return None, sr0
    sharpe, count, skew, kurt = moments
    return probabilistic_sharpe(sharpe, count, skew, kurt, benchmark=sr0), sr0


def _quiet() -> np.errstate:
    """Overflow and 0/0 give inf or NaN, which the formulas report as None: no warnings."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


def compute_metrics_block(
    equity: np.ndarray,
    position: np.ndarray,
    close: np.ndarray,
    gaps: int,
    counts: TradeCounts,
    names: Sequence[str] = METRIC_NAMES,
) -> list[dict[str, float | int | None]]:
    """The metrics `names` (default: all) of k backtests over the same bars at once: equity and
    position are (k, n). Asking for fewer metrics computes only what they need (a walk-forward
    selects on one metric in every fold), by the same formulas."""
    block = _Block(equity, position, close, gaps, counts)
    columns = [getattr(block, name)() for name in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


class _Block:
    """k backtests over the same bars. Each metric is a method returning its k values; the
    intermediate arrays they share (bar returns, their mean, the running peak) are computed once,
    when first needed."""

    def __init__(self, equity: np.ndarray, position: np.ndarray, close: np.ndarray, gaps: int, counts: TradeCounts):
        self.equity, self.position, self.close, self.counts = equity, position, close, counts
        self.gap_count = gaps
        self.k, self.bar_count = equity.shape

    # -- shared intermediates (None where a metric is undefined for lack of returns) --

    @cached_property
    def _returns(self) -> np.ndarray:
        with _quiet():
            returns = np.divide(self.equity[:, 1:], self.equity[:, :-1])
            returns -= 1.0
        for i in np.flatnonzero(self.counts.exits[:, EXIT_KINDS.index("ruin")]):  # ruined: equity 0 from there on
            returns[i, self.equity[i, :-1] == 0.0] = 0.0  # no return, not 0/0
        return returns

    @cached_property
    def _mean(self) -> np.ndarray:
        with _quiet():
            return np.mean(self._returns, axis=1)

    @cached_property
    def _std(self) -> np.ndarray:
        # np.std(R, axis=1, ddof=1) step for step (the same bits), reusing the mean
        with _quiet():
            variance = np.add.reduce(self._squares, axis=1) / max(self._returns.shape[1] - 1, 0)
            return np.sqrt(variance, out=variance)

    @cached_property
    def _deviation(self) -> np.ndarray:
        return self._returns - self._mean[:, np.newaxis]

    @cached_property
    def _squares(self) -> np.ndarray:
        return np.multiply(self._deviation, self._deviation)

    @cached_property
    def _moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Skewness m3/m2^1.5 and kurtosis m4/m2^2 of each row's returns (population moments)."""
        squares, count = self._squares, self._returns.shape[1]
        with _quiet():
            m2 = np.add.reduce(squares, axis=1) / count
            # row by row reductions along contiguous rows: the same bits for a row in any block
            power = np.multiply(squares, self._deviation)
            m3 = np.add.reduce(power, axis=1) / count
            m4 = np.add.reduce(np.multiply(squares, squares, out=power), axis=1) / count
            return m3 / m2**1.5, m4 / (m2 * m2)

    @cached_property
    def _cagr(self) -> list[float | None]:
        with _quiet():
            cagr = self.equity[:, -1] ** (HOURS_PER_YEAR / self.bar_count) - 1.0
        return [_finite(value) for value in cagr]

    @cached_property
    def _drawdown(self) -> np.ndarray:
        with _quiet():  # max(1 - E/peak) is 1 - min(E/peak) exactly: fl(1 - x) falls as x rises
            ratio = np.maximum.accumulate(self.equity, axis=1)
            np.divide(self.equity, ratio, out=ratio)
            return 1.0 - np.min(ratio, axis=1)

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
            losses = np.minimum(self._returns, 0.0)
            downside = np.sqrt(np.mean(np.multiply(losses, losses, out=losses), axis=1))
        return [
            _ratio(float(mean) * HOURS_PER_YEAR, float(down) * _ANNUAL)
            for mean, down in zip(self._mean, downside, strict=True)
        ]

    def psr(self) -> list[float | None]:
        if self._returns.shape[1] < 2:
            return [None] * self.k
        count = self._returns.shape[1]
        skew, kurt = self._moments
        return [
            probabilistic_sharpe(float(mean) / float(std), count, float(g3), float(g4)) if std > 0 else None
            for mean, std, g3, g4 in zip(self._mean, self._std, skew, kurt, strict=True)
        ]

    def max_drawdown(self) -> list[float | None]:
        return [_finite(float(drawdown)) for drawdown in self._drawdown]

    def calmar(self) -> list[float | None]:
        return [
            _ratio(cagr, float(drawdown)) if cagr is not None and float(drawdown) > 0 else None
            for cagr, drawdown in zip(self._cagr, self._drawdown, strict=True)
        ]

    def trades(self) -> list[int]:
        return [int(value) for value in self.counts.entries]

    def long_trades(self) -> list[int]:
        return [int(value) for value in self.counts.long_entries]

    def short_trades(self) -> list[int]:
        return [int(value) for value in self.counts.short_entries]

    def win_rate(self) -> list[float | None]:
        return [
            float(wins / closed) if closed else None
            for wins, closed in zip(self.counts.wins, self.counts.closed, strict=True)
        ]

    def exits(self) -> list[dict[str, int]]:
        return [dict(zip(EXIT_KINDS, map(int, row), strict=True)) for row in self.counts.exits]

    def exposure(self) -> list[float]:
        return [float(value) for value in np.count_nonzero(self.position, axis=1) / self.bar_count]

    def bars(self) -> list[int]:
        return [int(self.bar_count)] * self.k

    def gaps(self) -> list[int]:
        return [int(self.gap_count)] * self.k
