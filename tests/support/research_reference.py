"""Plain loops of issue 21's research figures, written from the issue's formulas (and
/work/contract21.md's nulls), not from the job's code: the independent references
tests/test_research_stats.py holds the job to.

- `psr` / `dsr` (Bailey & López de Prado, "The Deflated Sharpe Ratio", 2014): moments by
  explicit loops over Python floats (sums exact, `math.fsum`), Φ and Φ⁻¹ from
  `statistics.NormalDist`;
- `trade_stats` of a list of trades (return or None while open, bars held);
- `trades_from_equity`: a long/flat, size-1 run's trades rebuilt from its equity file alone;
- `walk_forward_efficiency`: the pooled efficiency and the median of the per-fold ratios from a
  result's folds and stitched figures.

Nothing here imports `backtest`.
"""

from __future__ import annotations

import math
from statistics import NormalDist

EULER_GAMMA = 0.5772156649
HOURS_PER_YEAR = 8760
_PHI = NormalDist()


# -- bar returns and their moments ------------------------------------------------------------


def bar_returns(equity) -> list[float]:
    """R_t = E_t / E_{t-1} - 1 for t = 1..n-1; 0 where E_{t-1} is 0 (after a ruin)."""
    e = [float(x) for x in equity]
    out = []
    for t in range(1, len(e)):
        out.append(0.0 if e[t - 1] == 0.0 else e[t] / e[t - 1] - 1.0)
    return out


def moments(returns) -> dict[str, float] | None:
    """T, mean, std (ddof 1), the per-bar Sharpe S, population m2, m3, m4, skewness m3/m2^1.5
    and (non-excess) kurtosis m4/m2^2; None when T < 2 or std is 0."""
    r = [float(x) for x in returns]
    n = len(r)
    if n < 2:
        return None
    mean = math.fsum(r) / n
    d2, d3, d4 = [], [], []
    for x in r:
        d = x - mean
        d2.append(d * d)
        d3.append(d * d * d)
        d4.append(d * d * d * d)
    s2 = math.fsum(d2)
    std = math.sqrt(s2 / (n - 1))
    if std == 0.0:
        return None
    m2, m3, m4 = s2 / n, math.fsum(d3) / n, math.fsum(d4) / n
    return {
        "T": n,
        "mean": mean,
        "std": std,
        "S": mean / std,
        "m2": m2,
        "m3": m3,
        "m4": m4,
        "skew": m3 / m2**1.5,
        "kurt": m4 / (m2 * m2),
    }


def psr_of_moments(S: float, T: int, skew: float, kurt: float, sr0: float = 0.0) -> float | None:
    """Φ((S − SR₀)·√(T−1) / √(1 − γ3·S + (γ4−1)/4·S²)); None when T < 2, the radicand is not
    positive or anything is not finite."""
    if T < 2 or not all(math.isfinite(x) for x in (S, skew, kurt, sr0)):
        return None
    radicand = 1.0 - skew * S + (kurt - 1.0) / 4.0 * S * S
    if not math.isfinite(radicand) or radicand <= 0.0:
        return None
    z = (S - sr0) * math.sqrt(T - 1) / math.sqrt(radicand)
    if not math.isfinite(z):
        return None
    return _PHI.cdf(z)


def psr(returns, sr0: float = 0.0) -> float | None:
    """The probabilistic Sharpe ratio of bar returns (against SR₀, per bar; 0 by default)."""
    m = moments(returns)
    if m is None:
        return None
    return psr_of_moments(m["S"], m["T"], m["skew"], m["kurt"], sr0)


def psr_of_equity(equity, sr0: float = 0.0) -> float | None:
    return psr(bar_returns(equity), sr0)


def sr0(per_bar_sharpes, trials: int) -> float | None:
    """SR₀ = √V·((1−γ)·Φ⁻¹(1−1/N) + γ·Φ⁻¹(1−1/(N·e))): V the variance (ddof 1) of the defined
    per-bar Sharpes (None: undefined, left out), N = `trials`; None with fewer than 2 defined."""
    defined = [float(s) for s in per_bar_sharpes if s is not None]
    if len(defined) < 2 or trials < 2:
        return None
    mean = math.fsum(defined) / len(defined)
    squares = []
    for s in defined:
        squares.append((s - mean) ** 2)
    variance = math.fsum(squares) / (len(defined) - 1)
    n = float(trials)
    value = math.sqrt(variance) * (
        (1.0 - EULER_GAMMA) * _PHI.inv_cdf(1.0 - 1.0 / n) + EULER_GAMMA * _PHI.inv_cdf(1.0 - 1.0 / (n * math.e))
    )
    return value if math.isfinite(value) else None


def dsr(returns, annual_sharpes, trials: int) -> tuple[float | None, float | None]:
    """(dsr, SR₀) of the chosen combination's bar returns among `trials` combinations whose
    annualised Sharpes are `annual_sharpes` (per bar: / √8760)."""
    per_bar = [None if s is None else s / math.sqrt(HOURS_PER_YEAR) for s in annual_sharpes]
    threshold = sr0(per_bar, trials)
    if threshold is None:
        return None, None
    return psr(returns, threshold), threshold


# -- trade statistics -------------------------------------------------------------------------

TRADE_STAT_KEYS = (
    "best_trade",
    "worst_trade",
    "avg_trade",
    "avg_win",
    "avg_loss",
    "profit_factor",
    "expectancy",
    "sqn",
    "avg_trade_bars",
    "max_trade_bars",
    "max_consecutive_losses",
)


def trade_stats(trades) -> dict[str, float | int | None]:
    """The statistics of `trades`, (return or None while open, bars held) in entry order, over
    the closed ones; None where undefined, as the contract says."""
    closed = [(float(ret), int(bars)) for ret, bars in trades if ret is not None]
    if not closed:
        return dict.fromkeys(TRADE_STAT_KEYS)
    rets = [ret for ret, _ in closed]
    n = len(rets)
    best = worst = rets[0]
    wins, losses = [], []
    for ret in rets:
        best, worst = max(best, ret), min(worst, ret)
        if ret > 0:
            wins.append(ret)
        elif ret < 0:
            losses.append(ret)
    mean = math.fsum(rets) / n
    sqn = None
    if n >= 2:
        std = math.sqrt(math.fsum([(ret - mean) ** 2 for ret in rets]) / (n - 1))
        if std > 0:
            sqn = math.sqrt(n) * mean / std
    streak = longest = 0
    for ret in rets:
        streak = streak + 1 if ret < 0 else 0
        longest = max(longest, streak)
    bars = [b for _, b in closed]
    return {
        "best_trade": best,
        "worst_trade": worst,
        "avg_trade": mean,
        "avg_win": math.fsum(wins) / len(wins) if wins else None,
        "avg_loss": math.fsum(losses) / len(losses) if losses else None,
        "profit_factor": math.fsum(wins) / abs(math.fsum(losses)) if losses else None,
        "expectancy": mean,
        "sqn": sqn,
        "avg_trade_bars": sum(bars) / len(bars),
        "max_trade_bars": max(bars),
        "max_consecutive_losses": longest,
    }


# -- trades rebuilt from an equity file -------------------------------------------------------


def trades_from_equity(equity, position, segments=None) -> list[dict]:
    """The trades of a long/flat, size-1 run from its equity file: a maximal run a..b of equal
    nonzero `position` is one trade, held b - a + 1 bars; it returns E[b+1]/E[a-1] - 1 when bar
    b+1 exists (flat) in the same segment, E[-1] = 1 before the first bar; a run reaching its
    segment's end is open (exit and return None).

    `segments` (e.g. a walk-forward file's `fold` column): bars with different values are separate
    backtests, each starting flat; a trade open at one's last bar stays open."""
    e = [float(x) for x in equity]
    p = [int(x) for x in position]
    seg = [0] * len(p) if segments is None else [int(x) for x in segments]
    trades, t = [], 0
    while t < len(p):
        if p[t] == 0:
            t += 1
            continue
        a = t
        while t + 1 < len(p) and p[t + 1] == p[a] and seg[t + 1] == seg[a]:
            t += 1
        b = t
        if b + 1 < len(p) and seg[b + 1] == seg[a]:
            if p[b + 1] != 0:
                raise ValueError(f"bar {b + 1} reverses the trade from bar {a}: not a long/flat run")
            before = e[a - 1] if a > 0 else 1.0
            if a > 0 and seg[a - 1] != seg[a]:
                raise ValueError(f"a trade at a segment's first bar {a}: a backtest starts flat")
            trades.append(
                {"entry": a, "exit": b + 1, "side": p[a], "return": e[b + 1] / before - 1.0, "bars": b - a + 1}
            )
        else:
            trades.append({"entry": a, "exit": None, "side": p[a], "return": None, "bars": b - a + 1})
        t = b + 1
    return trades


def bars_held(trades, position) -> list[int]:
    """Per (entry, exit | None, side, ...) trade: the bars from its entry to its exit (or the
    window's end) whose position is its side."""
    p = [int(x) for x in position]
    out = []
    for trade in trades:
        entry, exit_, side = trade[0], trade[1], trade[2]
        last = len(p) - 1 if exit_ is None else exit_
        out.append(sum(1 for t in range(entry, last + 1) if p[t] == side))
    return out


# -- walk-forward efficiency ------------------------------------------------------------------


def walk_forward_efficiency(folds, stitched_cagr) -> dict[str, float | int | None]:
    """From a result's `walk_forward.folds` (each with `in_sample` and `out_of_sample` metrics)
    and the stitched `cagr`: the pooled efficiency, the mean in-sample cagr, the per-fold ratios,
    their median, how many are defined, and the old rule (their mean) for comparison."""
    in_cagr = [f["in_sample"]["cagr"] for f in folds if f["in_sample"]["cagr"] is not None]
    mean_in = math.fsum(in_cagr) / len(in_cagr) if in_cagr else None
    pooled = None
    if mean_in is not None and mean_in > 0 and stitched_cagr is not None:
        pooled = stitched_cagr / mean_in
    ratios = []
    for f in folds:
        ins, out = f["in_sample"]["cagr"], f["out_of_sample"]["cagr"]
        if ins is not None and ins > 0 and out is not None:
            ratios.append(out / ins)
    median = None
    if ratios:
        ordered = sorted(ratios)
        mid = len(ordered) // 2
        median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {
        "efficiency": pooled,
        "in_sample_cagr": mean_in,
        "ratios": ratios,
        "efficiency_median": median,
        "efficiency_folds": len(ratios),
        "old_mean_efficiency": math.fsum(ratios) / len(ratios) if ratios else None,
    }
