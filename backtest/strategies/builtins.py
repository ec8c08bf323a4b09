"""The built-in strategies, each with its exact semantics, long and short.

On the hourly closes c, highs h and lows l of the candles read (index t = 0 is the first candle
read, warm-up included), each built-in declares `sides = ("long", "short")` and returns int8
targets in {-1, 0, +1}; every target is 0 while undefined. The short side of each is the mirror
of its long rule; the long side, max(target, 0), is the long/flat signal the built-ins had
before they had a short side, bit for bit (tests/test_short_side.py).

- `sma_trend(window)`: target_t = +1 if c_t > SMA_window,t (the mean of c_{t-w+1..t}), -1 if
  c_t < SMA_window,t, 0 on a tie; defined for t >= w-1, decided exactly on the float64 inputs
  (`exact.sma_sign`). The default.
- `sma_cross(fast, slow)`, fast < slow: target_t = +1 if SMA_fast,t > SMA_slow,t, -1 if
  SMA_fast,t < SMA_slow,t, 0 on a tie; defined for t >= slow-1, decided exactly on the float64
  inputs.
- `ema_trend(span)`: alpha = 2/(span+1); EMA_{span-1} = the simple mean of the first span
  closes read (correctly rounded), then EMA_t = alpha*c_t + (1-alpha)*EMA_{t-1}, computed as
  EMA_{t-1} + alpha*(c_t - EMA_{t-1}); target_t = +1 if c_t > EMA_t, -1 if c_t < EMA_t, else
  0, for t >= span-1. (That mean and that order keep the EMA of a flat price exactly at the
  price: a flat price is neither above nor below its EMA, whatever the rounding.)
- `momentum(lookback)`: target_t = +1 if c_t > c_{t-lookback}, -1 if c_t < c_{t-lookback},
  else 0, for t >= lookback.
- `donchian_breakout(entry, exit)`: two states, with m = max(entry, exit), each 0 for t < m and
  for t >= m: long s_t = 1 if c_t > max(h_{t-entry..t-1}), 0 if c_t < min(l_{t-exit..t-1}),
  else s_{t-1}; short z_t = 1 if c_t < min(l_{t-entry..t-1}), 0 if c_t > max(h_{t-exit..t-1}),
  else z_{t-1}. target = +1 while s = 1, else -1 while z = 1, else 0: the long state wins
  (both are 1 only when entry < exit), so the long side is s.
- `rsi_reversion(period, lower, upper)`, lower < upper: Wilder's RSI on the changes
  x_t = c_t - c_{t-1}: the first average gain and loss (at t = period) are fsum of the first
  `period` gains / losses divided by period, then avg_t = (avg_{t-1}*(period-1) + x_t)/period;
  RSI_t = 100 - 100/(1 + avg_gain_t/avg_loss_t), 100 when avg_loss_t = 0. Two states, 0 for
  t < period: long 1 when RSI_t < lower, 0 when RSI_t > upper, else unchanged; short 1 when
  RSI_t > upper, 0 when RSI_t < lower, else unchanged. target = long - short (never both 1:
  each bar sets at most one of them to 1 and the other to 0). A flat price has RSI 100 (no
  loss), so from t = period on it is short (for upper < 100), never long.

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

from backtest.data.candles import Candles
from backtest.strategies.contract import SEEDED_WARMUP_FACTOR, Combo, Param, Strategy
from backtest.strategies.exact import UNIT_ROUNDOFF, ExactPrefix, PrefixSums, exact_mean, sma_sign
from backtest.strategies.states import RollingExtremes, hold_state, sign_of
from backtest.strategies.targets import LONG_SHORT, TARGET_DTYPE

MAX_BARS = 100_000


def _bars(name: str, default: str, low: int = 2, help: str = "") -> Param:
    return Param(name, default, low=low, high=MAX_BARS, bars=True, help=help)


class SmaTrend(Strategy):
    name = "sma_trend"
    description = "long while the close is above its simple moving average (short: below)"
    sides = LONG_SHORT
    params = (_bars("window", "15d", help="SMA window"),)

    def warmup_bars(self, params: Combo) -> int:
        return params["window"] - 1

    def signals(self, candles: Candles, combos: Sequence[Combo]) -> np.ndarray:
        prefix = PrefixSums.of(candles.close)
        out = np.zeros((len(combos), len(candles)), dtype=TARGET_DTYPE)
        for row, combo in enumerate(combos):
            out[row] = sma_sign(candles.close, combo["window"], prefix)
        return out


class SmaCross(Strategy):
    name = "sma_cross"
    description = "long while the fast SMA is above the slow SMA (short: below)"
    sides = LONG_SHORT
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
        out = np.zeros((len(combos), n), dtype=TARGET_DTYPE)
        for row, combo in enumerate(combos):
            f, s = combo["fast"], combo["slow"]
            if n < s:
                continue
            # Bars t = s-1 .. n-1: rolling sums A_f (ends at t) and A_s, from the prefix sums.
            a_f = cs[s:] - cs[s - f : n + 1 - f]
            a_s = cs[s:] - cs[: n + 1 - s]
            err_f = err_cs[s:] + err_cs[s - f : n + 1 - f] + UNIT_ROUNDOFF * np.abs(a_f)
            err_s = err_cs[s:] + err_cs[: n + 1 - s] + UNIT_ROUNDOFF * np.abs(a_s)
            diff = s * a_f - f * a_s  # > 0 exactly when SMA_fast > SMA_slow (< 0: below), up to rounding
            tol = 2.0 * (s * err_f + f * err_s + UNIT_ROUNDOFF * (s * np.abs(a_f) + f * np.abs(a_s) + np.abs(diff)))
            decided = out[row, s - 1 :]
            sign_of(diff > 0, diff < 0, out=decided)
            for i in np.nonzero(np.abs(diff) <= tol)[0]:  # the bound is symmetric: either sign
                cross = exact.cross(i + s - 1, f, s)
                decided[i] = (cross > 0) - (cross < 0)
        return out


class EmaTrend(Strategy):
    name = "ema_trend"
    description = "long while the close is above its exponential moving average (short: below)"
    seeded = True
    sides = LONG_SHORT
    params = (_bars("span", "15d", help="EMA span (alpha = 2/(span+1))"),)

    def warmup_bars(self, params: Combo) -> int:
        return SEEDED_WARMUP_FACTOR * params["span"]

    def lookback(self, params: Combo) -> int:
        return params["span"] - 1

    def signals(self, candles: Candles, combos: Sequence[Combo]) -> np.ndarray:
        closes = candles.close.tolist()
        out = np.zeros((len(combos), len(candles)), dtype=TARGET_DTYPE)
        for row, combo in enumerate(combos):
            span = combo["span"]
            if len(closes) >= span:
                ema = ema_values(closes, span)
                close = candles.close[span - 1 :]
                sign_of(close > ema, close < ema, out=out[row, span - 1 :])
        return out


def ema_values(close: list[float], span: int) -> np.ndarray:
    """EMA_t for t = span-1 .. n-1 (n >= span), by the recursion in the module docstring (Python
    floats: the same float64 operations, in the same order, as the rule says)."""
    alpha = 2.0 / (span + 1)
    ema = exact_mean(close[:span])
    values = [ema]
    for x in close[span:]:
        ema += alpha * (x - ema)
        values.append(ema)
    return np.array(values)


class Momentum(Strategy):
    name = "momentum"
    description = "long while the close is above the close `lookback` bars before (short: below)"
    sides = LONG_SHORT
    params = (_bars("lookback", "7d", low=1, help="bars back"),)

    def warmup_bars(self, params: Combo) -> int:
        return params["lookback"]

    def signals(self, candles: Candles, combos: Sequence[Combo]) -> np.ndarray:
        close = candles.close
        out = np.zeros((len(combos), len(close)), dtype=TARGET_DTYPE)
        for row, combo in enumerate(combos):
            lag = combo["lookback"]
            now, before = close[lag:], close[:-lag]
            sign_of(now > before, now < before, out=out[row, lag:])
        return out


class DonchianBreakout(Strategy):
    name = "donchian_breakout"
    description = (
        "long from a close above the entry-bar high until a close below the exit-bar low "
        "(short: mirrored, below the entry-bar low until above the exit-bar high)"
    )
    seeded = True
    sides = LONG_SHORT
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
        out = np.zeros((len(combos), n), dtype=TARGET_DTYPE)
        if n < 2:
            return out
        # max(h_{t-w..t-1}) and min(l_{t-w..t-1}) for t >= w, at index t - w, for any window w.
        highs, lows = RollingExtremes(candles.high[:-1], np.maximum), RollingExtremes(candles.low[:-1], np.minimum)
        for row, combo in enumerate(combos):
            entry, exit_ = combo["entry"], combo["exit"]
            m = max(entry, exit_)
            if n <= m:
                continue
            close = c[m:]
            long_ = hold_state(close > highs.of(entry)[m - entry :], close < lows.of(exit_)[m - exit_ :], m)
            short = hold_state(close < lows.of(entry)[m - entry :], close > highs.of(exit_)[m - exit_ :], m)
            sign_of(long_, short & ~long_, out=out[row])  # the long state wins
        return out


class RsiReversion(Strategy):
    name = "rsi_reversion"
    description = "long from RSI below `lower` until RSI above `upper` (Wilder's RSI; short: mirrored)"
    seeded = True
    sides = LONG_SHORT
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
        out = np.zeros((len(combos), n), dtype=TARGET_DTYPE)
        for row, combo in enumerate(combos):
            period = combo["period"]
            if n <= period:
                continue
            if period not in rsi_by_period:
                rsi_by_period[period] = wilder_rsi(candles.close.tolist(), period)[period:]
            rsi = rsi_by_period[period]  # from bar `period` on
            below, above = rsi < combo["lower"], rsi > combo["upper"]
            sign_of(hold_state(below, above, period), hold_state(above, below, period), out=out[row])
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
