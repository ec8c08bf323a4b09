"""The built-in strategies, each with its exact semantics.

On the hourly closes c, highs h and lows l of the candles read (index t = 0 is the first candle
read, warm-up included); every signal is 0 while undefined.

- `sma_trend(window)`: signal_t = 1 if c_t > SMA_window,t (the mean of c_{t-w+1..t}), defined
  for t >= w-1, decided exactly on the float64 inputs (`exact.above_sma`). The default.
- `sma_cross(fast, slow)`, fast < slow: signal_t = 1 if SMA_fast,t > SMA_slow,t, defined for
  t >= slow-1, decided exactly on the float64 inputs (a tie is 0).
- `ema_trend(span)`: alpha = 2/(span+1); EMA_{span-1} = the simple mean of the first span
  closes read (correctly rounded), then EMA_t = alpha*c_t + (1-alpha)*EMA_{t-1}, computed as
  EMA_{t-1} + alpha*(c_t - EMA_{t-1}); signal_t = 1 if c_t > EMA_t, for t >= span-1. (That
  mean and that order keep the EMA of a flat price exactly at the price: a flat price is never
  above its EMA, whatever the rounding.)
- `momentum(lookback)`: signal_t = 1 if c_t > c_{t-lookback}, for t >= lookback.
- `donchian_breakout(entry, exit)`: upper_t = max(h_{t-entry..t-1}), lower_t =
  min(l_{t-exit..t-1}); with m = max(entry, exit), s_t = 0 for t < m, and for t >= m:
  s_t = 1 if c_t > upper_t, 0 if c_t < lower_t, else s_{t-1}. signal = s.
- `rsi_reversion(period, lower, upper)`, lower < upper: Wilder's RSI on the changes
  x_t = c_t - c_{t-1}: the first average gain and loss (at t = period) are fsum of the first
  `period` gains / losses divided by period, then avg_t = (avg_{t-1}*(period-1) + x_t)/period;
  RSI_t = 100 - 100/(1 + avg_gain_t/avg_loss_t), 100 when avg_loss_t = 0. State (0 for
  t < period): 1 when RSI_t < lower, 0 when RSI_t > upper, else unchanged. signal = state.

Warm-up: `sma_trend`, `sma_cross` and `momentum` read exactly the lookback they need (w-1,
slow-1, lookback candles before the window). `ema_trend`, `donchian_breakout` and
`rsi_reversion` have a seed or a state, computed from the first candle read, so they read
5x their longest lookback (span, max(entry, exit), period) before the window, or from the first
stored candle: the seed's weight after 5 spans is (1-alpha)^(5 span) ~ e^-10, and the look-ahead
check bounds the bars it can still change (`lookahead.SEEDED_TOLERANCE`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from backtest.data.candles import Candles
from backtest.strategies.contract import SEEDED_WARMUP_FACTOR, Combo, Param, Strategy
from backtest.strategies.exact import UNIT_ROUNDOFF, ExactPrefix, PrefixSums, above_sma, exact_mean

MAX_BARS = 100_000


def _bars(name: str, default: str, low: int = 2, help: str = "") -> Param:
    return Param(name, default, low=low, high=MAX_BARS, bars=True, help=help)


class SmaTrend(Strategy):
    name = "sma_trend"
    description = "long while the close is above its simple moving average"
    params = (_bars("window", "15d", help="SMA window"),)

    def warmup_bars(self, params: Combo) -> int:
        return params["window"] - 1

    def signals(self, candles: Candles, combos: Sequence[Combo]) -> np.ndarray:
        prefix = PrefixSums.of(candles.close)
        return np.stack([above_sma(candles.close, combo["window"], prefix) for combo in combos])


class SmaCross(Strategy):
    name = "sma_cross"
    description = "long while the fast SMA is above the slow SMA"
    params = (_bars("fast", "1d", low=1, help="fast SMA window"), _bars("slow", "5d", help="slow SMA window"))

    def reject(self, params: Combo) -> str | None:
        if params["fast"] >= params["slow"]:
            return f"fast ({params['fast']} bars) must be shorter than slow ({params['slow']} bars)"
        return None

    def warmup_bars(self, params: Combo) -> int:
        return params["slow"] - 1

    def signals(self, candles: Candles, combos: Sequence[Combo]) -> np.ndarray:
        close = candles.close
        n = len(close)
        prefix = PrefixSums.of(close)
        cs, err_cs = prefix.sums, prefix.error_bound
        exact = ExactPrefix(close)
        out = np.zeros((len(combos), n), dtype=bool)
        for row, combo in enumerate(combos):
            f, s = combo["fast"], combo["slow"]
            if n < s:
                continue
            # Bars t = s-1 .. n-1: rolling sums A_f (ends at t) and A_s, from the prefix sums.
            a_f = cs[s:] - cs[s - f : n + 1 - f]
            a_s = cs[s:] - cs[: n + 1 - s]
            err_f = err_cs[s:] + err_cs[s - f : n + 1 - f] + UNIT_ROUNDOFF * np.abs(a_f)
            err_s = err_cs[s:] + err_cs[: n + 1 - s] + UNIT_ROUNDOFF * np.abs(a_s)
            diff = s * a_f - f * a_s  # > 0 exactly when SMA_fast > SMA_slow, up to rounding
            tol = 2.0 * (s * err_f + f * err_s + UNIT_ROUNDOFF * (s * np.abs(a_f) + f * np.abs(a_s) + np.abs(diff)))
            decided = diff > 0
            for i in np.nonzero(np.abs(diff) <= tol)[0]:
                decided[i] = exact.cross(i + s - 1, f, s) > 0
            out[row, s - 1 :] = decided
        return out


class EmaTrend(Strategy):
    name = "ema_trend"
    description = "long while the close is above its exponential moving average"
    seeded = True
    params = (_bars("span", "15d", help="EMA span (alpha = 2/(span+1))"),)

    def warmup_bars(self, params: Combo) -> int:
        return SEEDED_WARMUP_FACTOR * params["span"]

    def lookback(self, params: Combo) -> int:
        return params["span"] - 1

    def signals(self, candles: Candles, combos: Sequence[Combo]) -> np.ndarray:
        close = candles.close.tolist()
        return np.stack([_ema_signal(close, combo["span"]) for combo in combos])


def _ema_signal(close: list[float], span: int) -> np.ndarray:
    n = len(close)
    above = [False] * n
    if n >= span:
        alpha = 2.0 / (span + 1)
        ema = exact_mean(close[:span])
        above[span - 1] = close[span - 1] > ema
        for t in range(span, n):
            ema += alpha * (close[t] - ema)
            above[t] = close[t] > ema
    return np.array(above, dtype=bool)


class Momentum(Strategy):
    name = "momentum"
    description = "long while the close is above the close `lookback` bars before"
    params = (_bars("lookback", "7d", low=1, help="bars back"),)

    def warmup_bars(self, params: Combo) -> int:
        return params["lookback"]

    def signals(self, candles: Candles, combos: Sequence[Combo]) -> np.ndarray:
        close = candles.close
        out = np.zeros((len(combos), len(close)), dtype=bool)
        for row, combo in enumerate(combos):
            lag = combo["lookback"]
            out[row, lag:] = close[lag:] > close[:-lag]
        return out


def _hold_state(enter: np.ndarray, leave: np.ndarray, start: int) -> np.ndarray:
    """State per bar: 0 before `start`; from it, 1 on `enter`, 0 on `leave`, else the previous state."""
    n = len(enter)
    event = np.zeros(n, dtype=bool)  # the state the last event set
    has_event = np.zeros(n, dtype=bool)
    has_event[:start] = True  # state 0 until start
    has_event[start:] = enter[start:] | leave[start:]
    event[start:] = enter[start:]
    last = np.maximum.accumulate(np.where(has_event, np.arange(n), 0))
    return event[last]


class DonchianBreakout(Strategy):
    name = "donchian_breakout"
    description = "long from a close above the entry-bar high until a close below the exit-bar low"
    seeded = True
    params = (
        _bars("entry", "5d", low=1, help="bars of highs to break"),
        _bars("exit", "2d", low=1, help="bars of lows"),
    )

    def warmup_bars(self, params: Combo) -> int:
        return SEEDED_WARMUP_FACTOR * max(params["entry"], params["exit"])

    def lookback(self, params: Combo) -> int:
        return max(params["entry"], params["exit"])

    def signals(self, candles: Candles, combos: Sequence[Combo]) -> np.ndarray:
        c, n = candles.close, len(candles)
        highs: dict[int, np.ndarray] = {}
        lows: dict[int, np.ndarray] = {}
        out = np.zeros((len(combos), n), dtype=bool)
        for row, combo in enumerate(combos):
            entry, exit_ = combo["entry"], combo["exit"]
            m = max(entry, exit_)
            if n <= m:
                continue
            if entry not in highs:  # upper_t for t >= entry, at index t - entry
                highs[entry] = sliding_window_view(candles.high[:-1], entry).max(axis=1)
            if exit_ not in lows:
                lows[exit_] = sliding_window_view(candles.low[:-1], exit_).min(axis=1)
            enter = np.zeros(n, dtype=bool)
            leave = np.zeros(n, dtype=bool)
            enter[m:] = c[m:] > highs[entry][m - entry :]
            leave[m:] = c[m:] < lows[exit_][m - exit_ :]
            out[row] = _hold_state(enter, leave, m)
        return out


class RsiReversion(Strategy):
    name = "rsi_reversion"
    description = "long from RSI below `lower` until RSI above `upper` (Wilder's RSI)"
    seeded = True
    params = (
        _bars("period", "14", help="RSI period"),
        Param("lower", 30.0, low=0.0, high=100.0, kind=float, help="enter below this RSI"),
        Param("upper", 70.0, low=0.0, high=100.0, kind=float, help="exit above this RSI"),
    )

    def reject(self, params: Combo) -> str | None:
        if params["lower"] >= params["upper"]:
            return f"lower ({params['lower']:g}) must be below upper ({params['upper']:g})"
        return None

    def warmup_bars(self, params: Combo) -> int:
        return SEEDED_WARMUP_FACTOR * params["period"]

    def lookback(self, params: Combo) -> int:
        return params["period"]

    def signals(self, candles: Candles, combos: Sequence[Combo]) -> np.ndarray:
        n = len(candles)
        rsi_by_period: dict[int, np.ndarray] = {}
        out = np.zeros((len(combos), n), dtype=bool)
        for row, combo in enumerate(combos):
            period = combo["period"]
            if n <= period:
                continue
            if period not in rsi_by_period:
                rsi_by_period[period] = wilder_rsi(candles.close.tolist(), period)
            rsi = rsi_by_period[period]
            out[row] = _hold_state(rsi < combo["lower"], rsi > combo["upper"], period)
        return out


def wilder_rsi(close: list[float], period: int) -> np.ndarray:
    """RSI_t for t >= period (NaN before), by the rules in the module docstring."""
    n = len(close)
    rsi = np.full(n, np.nan)
    if n <= period:
        return rsi
    changes = [close[t] - close[t - 1] for t in range(1, n)]  # changes[t-1] = x_t
    avg_gain = math.fsum(max(x, 0.0) for x in changes[:period]) / period
    avg_loss = math.fsum(max(-x, 0.0) for x in changes[:period]) / period
    values = [math.nan] * n
    for t in range(period, n):
        if t > period:
            x = changes[t - 1]
            avg_gain = (avg_gain * (period - 1) + max(x, 0.0)) / period
            avg_loss = (avg_loss * (period - 1) + max(-x, 0.0)) / period
        values[t] = 100.0 if avg_loss == 0 else 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    rsi[:] = values
    return rsi


BUILTINS = (SmaTrend, SmaCross, EmaTrend, Momentum, DonchianBreakout, RsiReversion)  # registered in this order
