"""Trade statistics of one backtest, from its trades (`backtest.simulation.trades.Trade`), and the
per-trade table the job stores beside the equity curve (`{symbol}.trades.parquet`).

Over the CLOSED trades r_1..r_n in entry order (a trade still open at the window's end is left
out), each r_i a trade's return as `backtest.simulation.engine` defines it (rule 7):

| statistic              | formula                                                       |
|------------------------|---------------------------------------------------------------|
| best_trade, worst_trade| max r_i, min r_i                                              |
| avg_trade, expectancy  | mean r_i (the same figure under both names people look for)   |
| avg_win, avg_loss      | mean of the r_i > 0, mean of the r_i < 0                      |
| profit_factor          | sum of r_i > 0 / abs(sum of r_i < 0)                          |
| sqn                    | sqrt(n) mean(r) / std(r, ddof=1) (Van Tharp's system quality)  |
| avg_trade_bars         | mean bars held (bars whose position is the trade's side)      |
| max_trade_bars         | most bars held                                                |
| max_consecutive_losses | longest streak of r_i < 0 (0 with no loss)                    |

None (JSON null) where undefined: everything with no closed trade, avg_win without a win,
avg_loss and profit_factor without a loss, sqn with fewer than 2 trades or no spread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from backtest.data.candles import to_arrow
from backtest.simulation.trades import Trade

TRADE_STAT_NAMES = (
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


def bars_held(trades: Sequence[Trade], position: np.ndarray) -> list[int]:
    """Each trade's bars held: the unbroken stretch of bars from its entry, up to its exit bar,
    whose `position` is its side (an intrabar exit's bar counts; a reversal's exit bar is the
    next trade's; a walk-forward fold's open trade stops at its fold's end, where the next fold
    starts flat)."""
    held = []
    for trade in trades:
        stop = len(position) if trade.exit is None else trade.exit + 1
        other = np.flatnonzero(position[trade.entry : stop] != trade.side)
        held.append(int(other[0]) if len(other) else stop - trade.entry)
    return held


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def trade_statistics(trades: Sequence[Trade], position: np.ndarray) -> dict[str, float | int | None]:
    """TRADE_STAT_NAMES of one backtest (see the module docstring); `position` is its (n,) sides."""
    closed = [trade for trade in trades if trade.ret is not None]
    returns = [trade.ret for trade in closed]
    if not returns:
        return dict.fromkeys(TRADE_STAT_NAMES)
    wins, losses = [r for r in returns if r > 0], [r for r in returns if r < 0]
    held = bars_held(closed, position)
    mean = math.fsum(returns) / len(returns)
    std = float(np.std(returns, ddof=1)) if len(returns) > 1 else 0.0
    streak = longest = 0
    for r in returns:
        streak = streak + 1 if r < 0 else 0
        longest = max(longest, streak)
    return {
        "best_trade": max(returns),
        "worst_trade": min(returns),
        "avg_trade": mean,
        "avg_win": _mean(wins),
        "avg_loss": _mean(losses),
        "profit_factor": math.fsum(wins) / -math.fsum(losses) if losses else None,
        "expectancy": mean,
        "sqn": math.sqrt(len(returns)) * mean / std if std > 0 else None,
        "avg_trade_bars": math.fsum(held) / len(held),
        "max_trade_bars": max(held),
        "max_consecutive_losses": longest,
    }


def trades_table(parts: Sequence[tuple[str, Sequence[Trade], np.ndarray, np.ndarray]]) -> pa.Table:
    """The trades file: for each (sample, trades, position, open_time) part, a row per trade:
    sample, entry_time, exit_time (null while open), side, return (null while open), bars held,
    exit_kind (null while open)."""
    columns: dict[str, list] = {name: [] for name in ("sample", "entry", "exit", "side", "return", "bars", "kind")}
    for sample, trades, position, open_time in parts:
        held = bars_held(trades, position)
        for trade, bars in zip(trades, held, strict=True):
            columns["sample"].append(sample)
            columns["entry"].append(int(open_time[trade.entry]))
            columns["exit"].append(None if trade.exit is None else int(open_time[trade.exit]))
            columns["side"].append(trade.side)
            columns["return"].append(trade.ret)
            columns["bars"].append(bars)
            columns["kind"].append(trade.kind)
    stamp = pa.timestamp("ms", tz="UTC")
    return pa.table(
        {
            "sample": pa.array(columns["sample"], pa.string()),
            "entry_time": pa.array(columns["entry"], pa.int64()).cast(stamp),
            "exit_time": pa.array(columns["exit"], pa.int64()).cast(stamp),
            "side": to_arrow(np.array(columns["side"], dtype=np.int8), pa.int8()),
            "return": pa.array(columns["return"], pa.float64()),
            "bars": pa.array(columns["bars"], pa.int32()),
            "exit_kind": pa.array(columns["kind"], pa.string()),
        }
    )
