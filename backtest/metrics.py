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
    return compute_metrics_block(equity[np.newaxis], position[np.newaxis], open_, close, fee, gaps)[0]


def compute_metrics_block(
    equity: np.ndarray,
    position: np.ndarray,
    open_: np.ndarray,
    close: np.ndarray,
    fee: float,
    gaps: int,
) -> list[dict[str, float | int | None]]:
    """The metrics of k backtests over the same bars at once: equity and position are (k, n)."""
    k, bars = equity.shape
    annual = math.sqrt(HOURS_PER_YEAR)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        returns = equity[:, 1:] / equity[:, :-1] - 1.0
        total_return = equity[:, -1] - 1.0
        cagr = equity[:, -1] ** (HOURS_PER_YEAR / bars) - 1.0
        if returns.shape[1] >= 2:
            std = np.std(returns, axis=1, ddof=1)
            mean = np.mean(returns, axis=1)
        if returns.shape[1]:
            downside = np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2, axis=1))
            mean_all = np.mean(returns, axis=1)
        max_drawdown = np.max(1.0 - equity / np.maximum.accumulate(equity, axis=1), axis=1)
    buy_hold = _finite(close[-1] / close[0] - 1.0)
    exposure = np.mean(position, axis=1)

    rows = []
    for i in range(k):
        volatility = sharpe = sortino = None
        if returns.shape[1] >= 2:
            volatility = _finite(float(std[i]) * annual)
            sharpe = _ratio(float(mean[i]) * annual, float(std[i]))
        if returns.shape[1]:
            sortino = _ratio(float(mean_all[i]) * HOURS_PER_YEAR, float(downside[i]) * annual)
        row_cagr = _finite(cagr[i])
        drawdown = float(max_drawdown[i])
        calmar = _ratio(row_cagr, drawdown) if row_cagr is not None and drawdown > 0 else None
        trades, win_rate = _round_trips(position[i], open_, fee)
        rows.append(
            {
                "total_return": _finite(total_return[i]),
                "buy_hold_return": buy_hold,
                "cagr": row_cagr,
                "volatility": volatility,
                "sharpe": sharpe,
                "sortino": sortino,
                "max_drawdown": _finite(drawdown),
                "calmar": calmar,
                "trades": trades,
                "win_rate": win_rate,
                "exposure": float(exposure[i]),
                "bars": int(bars),
                "gaps": int(gaps),
            }
        )
    return rows


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
