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


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _ratio(numerator: float, denominator: float) -> float | None:
    if denominator == 0:
        return None
    return _finite(numerator / denominator)


def compute_metrics(
    equity: np.ndarray,
    position: np.ndarray,
    open_: np.ndarray,
    close: np.ndarray,
    fee: float,
    gaps: int,
) -> dict[str, float | int | None]:
    """All metrics of one backtest (see the table in this module's docstring)."""
    bars = len(equity)
    returns = equity[1:] / equity[:-1] - 1.0
    annual = math.sqrt(HOURS_PER_YEAR)

    total_return = float(equity[-1] - 1.0)
    cagr = _finite(equity[-1] ** (HOURS_PER_YEAR / bars) - 1.0)

    volatility = sharpe = None
    if len(returns) >= 2:
        std = float(np.std(returns, ddof=1))
        volatility = _finite(std * annual)
        sharpe = _ratio(float(np.mean(returns)) * annual, std)

    sortino = None
    if len(returns):
        downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
        sortino = _ratio(float(np.mean(returns)) * HOURS_PER_YEAR, downside * annual)

    running_peak = np.maximum.accumulate(equity)
    max_drawdown = float(np.max(1.0 - equity / running_peak))
    calmar = _ratio(cagr, max_drawdown) if cagr is not None and max_drawdown > 0 else None

    entries = np.nonzero(position[1:] & ~position[:-1])[0] + 1
    exits = np.nonzero(~position[1:] & position[:-1])[0] + 1
    closed = len(exits)  # p_0 = 0, so the k-th exit closes the k-th entry
    win_rate = None
    if closed:
        trip_returns = (open_[exits] / open_[entries[:closed]]) * (1.0 - fee) ** 2 - 1.0
        win_rate = float(np.mean(trip_returns > 0))

    return {
        "total_return": _finite(total_return),
        "buy_hold_return": _finite(close[-1] / close[0] - 1.0),
        "cagr": cagr,
        "volatility": volatility,
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown": _finite(max_drawdown),
        "calmar": calmar,
        "trades": len(entries),
        "win_rate": win_rate,
        "exposure": float(np.mean(position)),
        "bars": int(bars),
        "gaps": int(gaps),
    }
