"""Plain, loop-based references of issue 21's research figures, written from the issue's formulas
(Bailey & Lopez de Prado's probabilistic and deflated Sharpe, trade statistics, the pooled
walk-forward efficiency), with Python floats and `statistics.NormalDist`. Nothing here is shared
with `backtest`: the tests hold the job's JSON and files to these.
"""

from __future__ import annotations

import math
import statistics
from statistics import NormalDist

HOURS_PER_YEAR = 8760
EULER_GAMMA = 0.5772156649
PHI = NormalDist()


# -- probabilistic and deflated Sharpe ---------------------------------------------------------------


def bar_returns(equity) -> list[float]:
    """R_t = E_t / E_{t-1} - 1 for t >= 1; 0 after a ruin (E_{t-1} = 0)."""
    values = [float(x) for x in equity]
    out = []
    for t in range(1, len(values)):
        out.append(0.0 if values[t - 1] == 0 else values[t] / values[t - 1] - 1)
    return out


def moments(returns) -> tuple[float, int, float, float] | None:
    """(per-bar Sharpe S with ddof 1, T, skewness g3, kurtosis g4) of the returns, by explicit
    loops; None when T < 2 or the standard deviation is 0."""
    r = [float(x) for x in returns]
    count = len(r)
    if count < 2:
        return None
    total = 0.0
    for x in r:
        total += x
    mean = total / count
    m2 = m3 = m4 = 0.0
    for x in r:
        d = x - mean
        m2 += d * d
        m3 += d * d * d
        m4 += d * d * d * d
    sample_var = m2 / (count - 1)
    m2, m3, m4 = m2 / count, m3 / count, m4 / count
    if not sample_var > 0 or not m2 > 0:
        return None
    sharpe = mean / math.sqrt(sample_var)
    return sharpe, count, m3 / m2**1.5, m4 / (m2 * m2)


def psr_of_moments(sharpe: float, count: int, g3: float, g4: float, benchmark: float = 0.0) -> float | None:
    """Phi((S - SR0) sqrt(T-1) / sqrt(1 - g3 S + (g4-1)/4 S^2)); None when the radicand is not
    positive or anything is not finite."""
    radicand = 1 - g3 * sharpe + (g4 - 1) / 4 * sharpe * sharpe
    if not math.isfinite(radicand) or radicand <= 0:
        return None
    z = (sharpe - benchmark) * math.sqrt(count - 1) / math.sqrt(radicand)
    if not math.isfinite(z):
        return None
    return PHI.cdf(z)


def psr(returns) -> float | None:
    """The probabilistic Sharpe ratio of bar returns (probability that the true Sharpe exceeds 0)."""
    m = moments(returns)
    return None if m is None else psr_of_moments(*m)


def psr_of_equity(equity) -> float | None:
    return psr(bar_returns(equity))


def sr0(annual_sharpes, trials: int) -> float | None:
    """The expected maximum per-bar Sharpe of `trials` unskilled trials:
    sqrt(V) ((1-g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e))), V the ddof-1 variance of the per-bar
    Sharpes (annual / sqrt(8760)) that are defined; None with fewer than 2 of them or N < 2."""
    per_bar = [s / math.sqrt(HOURS_PER_YEAR) for s in annual_sharpes if s is not None]
    if len(per_bar) < 2 or trials < 2:
        return None
    mean = sum(per_bar) / len(per_bar)
    var = 0.0
    for s in per_bar:
        var += (s - mean) ** 2
    var /= len(per_bar) - 1
    g = EULER_GAMMA
    value = math.sqrt(var) * ((1 - g) * PHI.inv_cdf(1 - 1 / trials) + g * PHI.inv_cdf(1 - 1 / (trials * math.e)))
    return value if math.isfinite(value) else None


def dsr(returns, annual_sharpes, trials: int) -> float | None:
    """The deflated Sharpe ratio: psr with S - SR0 in the numerator (S, g3, g4 of `returns`)."""
    m = moments(returns)
    benchmark = sr0(annual_sharpes, trials)
    if m is None or benchmark is None:
        return None
    return psr_of_moments(*m, benchmark=benchmark)


# -- trades and trade statistics ---------------------------------------------------------------------


def trades_from_equity(open_time, equity, position) -> list[dict]:
    """The trades of a long/flat run with size 1, without stops, from its equity file: a maximal run
    a..b of equal nonzero position is one trade; it is closed (exit at bar b+1's open) when bar b+1
    exists and is flat, its return E[b+1]/E[a-1] - 1 (E[-1] = 1); a run reaching the window's end
    is open (exit_time, return and exit_kind None). Bars held: the run's length."""
    times = list(open_time)
    e = [float(x) for x in equity]
    p = [int(x) for x in position]
    trades, t, n = [], 0, len(p)
    while t < n:
        if p[t] == 0:
            t += 1
            continue
        a = t
        while t + 1 < n and p[t + 1] == p[a]:
            t += 1
        b = t
        before = e[a - 1] if a > 0 else 1.0
        closed = b + 1 < n and p[b + 1] == 0
        trades.append(
            {
                "entry_time": times[a],
                "exit_time": times[b + 1] if closed else None,
                "side": p[a],
                "return": e[b + 1] / before - 1 if closed else None,
                "bars": b - a + 1,
                "exit_kind": "signal" if closed else None,
            }
        )
        t = b + 1
    return trades


def trade_stats(returns, bars) -> dict:
    """Issue 21's trade statistics of the CLOSED trades' returns and bars held (entry order)."""
    r = [float(x) for x in returns]
    n = len(r)
    wins = [x for x in r if x > 0]
    losses = [x for x in r if x < 0]
    mean = sum(r) / n if n else None
    sqn = None
    if n >= 2:
        sd = statistics.stdev(r)
        if sd > 0:
            sqn = math.sqrt(n) * mean / sd
    streak = longest = 0
    for x in r:
        streak = streak + 1 if x < 0 else 0
        longest = max(longest, streak)
    return {
        "best_trade": max(r) if n else None,
        "worst_trade": min(r) if n else None,
        "avg_trade": mean,
        "avg_win": sum(wins) / len(wins) if wins else None,
        "avg_loss": sum(losses) / len(losses) if losses else None,
        "profit_factor": sum(wins) / abs(sum(losses)) if losses else None,
        "expectancy": mean,
        "sqn": sqn,
        "avg_trade_bars": sum(bars) / len(bars) if n else None,
        "max_trade_bars": max(bars) if n else None,
        "max_consecutive_losses": longest,
    }


def trade_stats_of_trades(trades: list[dict]) -> dict:
    closed = [t for t in trades if t["return"] is not None]
    return trade_stats([t["return"] for t in closed], [t["bars"] for t in closed])


# -- the pooled walk-forward efficiency ------------------------------------------------------------


def fold_ratio(in_cagr: float | None, out_cagr: float | None) -> float | None:
    """A fold's own efficiency: out-of-sample cagr / in-sample cagr when the latter is > 0."""
    if in_cagr is None or out_cagr is None or not in_cagr > 0:
        return None
    return out_cagr / in_cagr


def walk_forward_efficiency(folds: list[dict], stitched_cagr: float | None) -> dict:
    """{in_sample_cagr, efficiency, efficiency_median, efficiency_folds} from the folds' chosen
    in-sample and out-of-sample cagr: the pooled efficiency is the stitched cagr over the mean
    in-sample cagr (None when that mean is <= 0 or undefined); the median is of the per-fold ratios."""
    in_cagrs = [fold["in_sample"]["cagr"] for fold in folds]
    mean = None
    if in_cagrs and all(c is not None for c in in_cagrs):
        mean = sum(in_cagrs) / len(in_cagrs)
    pooled = stitched_cagr / mean if mean is not None and mean > 0 and stitched_cagr is not None else None
    ratios = [fold_ratio(f["in_sample"]["cagr"], f["out_of_sample"]["cagr"]) for f in folds]
    ratios = [x for x in ratios if x is not None]
    return {
        "in_sample_cagr": mean,
        "efficiency": pooled,
        "efficiency_median": statistics.median(ratios) if ratios else None,
        "efficiency_folds": len(ratios),
    }
