"""What a backtest holds at the run's as-of moment: the side it would hold over the next bar, since
when, and for an open trade its entry fill and its return so far (what a daily run reports first).

For a backtest over bars 0..n-1 (positions p_t, trades, targets decided at each close), with d_n
the desired position over the next bar (the target at bar n-1's close, kept to the direction):

- `position_now`: d_n when d_n differs from d_{n-1} (a trade opens or closes at the next open);
  else the side of the trade still open at the last close (0 when none: flat, or stopped out of
  the current run, which stays flat until d changes, rule 3c); 0 after a ruin.
- `position_since`: the open time of the first bar of the trailing stretch of bars with
  p_t = position_now; the next bar's open time (the as-of moment) when p_{n-1} differs from it
  (the side starts with the next bar); the window's first bar when it never traded.
- With an open trade that goes on over the next bar: `position_entry_price`, its entry fill
  (o_e slipped adversely, clamped into [l_e, h_e], rule 5), and `position_return`, its return
  marked at the last close c without an exit fill: long (1-f) c / P_e - 1, short
  (1-f) - (1+r)^m c / P_e with m the hours of interest paid so far (one per bar held). Null
  otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backtest.data.candles import Candles
from backtest.params import HOUR_MS, format_time_ms
from backtest.simulation.execution import SIDE_NAMES, Execution
from backtest.simulation.trades import Trade

POSITION_KEYS = ("position_now", "position_since", "position_entry_price", "position_return")


def _kept(target: int, direction: str) -> int:
    if direction == "long":
        return max(target, 0)
    if direction == "short":
        return min(target, 0)
    return target


def position_now(
    candles: Candles,
    position: np.ndarray,
    trades: Sequence[Trade],
    targets: np.ndarray,
    execution: Execution,
    fee: float,
) -> dict:
    """POSITION_KEYS of one backtest over `candles` (its n bars) with `position` (n,), its
    `trades`, and `targets`, the strategy's targets of those bars (n,)."""
    n = len(position)
    direction = execution.direction
    d_next = _kept(int(targets[-1]), direction)
    d_last = _kept(int(targets[-2]), direction) if n > 1 else 0  # d_{n-1} = target_{n-2}; d_0 = 0
    still_open = [trade for trade in trades if trade.exit is None]
    ruined = any(trade.kind == "ruin" for trade in trades)
    if ruined:
        side = 0
    elif d_next != d_last:
        side = d_next
    else:
        side = still_open[-1].side if still_open else 0
    end_ms = int(candles.open_time[-1]) + HOUR_MS
    if int(position[-1]) != side:
        since = end_ms
    else:
        other = np.flatnonzero(position != side)
        since = int(candles.open_time[other[-1] + 1 if len(other) else 0])
    entry_price = ret = None
    if still_open and side == still_open[-1].side:
        trade = still_open[-1]
        k = execution.slippage
        price = candles.open[trade.entry] * (1 + k if side > 0 else 1 - k)
        price = float(min(max(price, candles.low[trade.entry]), candles.high[trade.entry]))
        close = float(candles.close[-1])
        if side > 0:
            ret = (1 - fee) * close / price - 1
        else:
            hours = int(np.count_nonzero(position[trade.entry :] == side))
            ret = (1 - fee) - (1 + execution.borrow_per_hour) ** hours * close / price
        entry_price = price
    return {
        "position_now": SIDE_NAMES[side],
        "position_since": format_time_ms(since),
        "position_entry_price": entry_price,
        "position_return": ret,
    }
