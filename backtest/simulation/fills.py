"""The general engine: shorts, stops, take-profit, trailing stops, slippage, size and borrow,
by the rules in `backtest.simulation.engine`'s docstring, vectorised over runs.

Why it can be vectorised: a trade opens only at the start of a run of d (rule 3c), so the trades
are the runs with d != 0, known before any fill. Within its run a trade ends at the first bar
whose range reaches its stop or take-profit (found for all trades at once from the bars' hit
mask), else at the next run's first open (a signal exit), else it is still open at the window's
end. A trade's return, and the equity at each close while it is held, are closed forms of its
entry and exit prices (rule 7), so the equity is the cumulative product of the trades' factors
1 + s ret at their exit bars times the current trade's mark at each close. Only a ruined account
(a short, rule 5) is then fixed up, one loop step per ruined backtest.

Arrays are (k, n) for k backtests of n bars, or flat (k * n) indices into them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backtest.simulation.execution import Execution
from backtest.simulation.trades import KIND_CODES, Simulation, TradeLog
from backtest.strategies.exact import require_finite

_SIGNAL, _STOP, _TAKE, _RUIN = (KIND_CODES[name] for name in ("signal", "stop", "take_profit", "ruin"))


def simulate_trades(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    desired: np.ndarray,
    fee: float,
    executions: Sequence[Execution],
) -> Simulation:
    """Every row of `desired` (k, n) int8 traded by each of the E `executions` (they differ only
    in sl, tp and trail): backtest i * E + e is row i with execution e. See the module docstring.

    What depends on the targets only (the trades, their entry prices, each bar's mark) is
    computed once for all executions; each execution adds its own exits and equity."""
    k, n = desired.shape
    first = executions[0]
    shared = (first.direction, first.size, first.slippage_bps, first.borrow_bps_per_day)
    if any((e.direction, e.size, e.slippage_bps, e.borrow_bps_per_day) != shared for e in executions):
        raise ValueError("the executions of one simulation differ only in sl, tp and trail")
    trades = _Trades(open_, high, low, close, desired, fee, first)
    count = len(executions)
    equity = np.empty((count, k, n))  # by execution, then row: each execution's block is contiguous
    position = np.empty((count, k, n), dtype=np.int8)
    logs = [trades.execute(execution, equity[e], position[e]) for e, execution in enumerate(executions)]
    row = np.concatenate([log.row * count + e for e, log in enumerate(logs)])
    entry = np.concatenate([log.entry for log in logs])
    order = np.lexsort((entry, row))  # (row, entry) order, as every TradeLog
    log = TradeLog(
        row[order],
        entry[order],
        *(np.concatenate([getattr(log, name) for log in logs])[order] for name in ("exit", "side", "ret", "kind")),
    )
    if count > 1:  # backtest i * E + e
        equity, position = (np.ascontiguousarray(a.transpose(1, 0, 2)) for a in (equity, position))
    equity = equity.reshape(k * count, n)
    require_finite(equity, "equity curve")
    return Simulation(equity, position.reshape(k * count, n), log)


class _Trades:
    """The trades of k rows of desired positions (the runs with d != 0) and what every execution
    of them shares: entry prices, stop references R, each bar's trade and mark."""

    def __init__(
        self,
        open_: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        desired: np.ndarray,
        fee: float,
        execution: Execution,
    ):
        self.open, self.high, self.low = open_, high, low
        d = self.d = desired.astype(np.int8, copy=False)
        k, n = self.k, self.n = d.shape
        self.size, self.slip, self.rate, self.keep = (
            execution.size,
            execution.slippage,
            execution.borrow_per_hour,
            1 - fee,
        )
        index = np.int64 if k * n >= 2**31 else np.int32
        boundary = np.ones((k, n), dtype=bool)
        np.not_equal(d[:, 1:], d[:, :-1], out=boundary[:, 1:])
        starts = np.flatnonzero(boundary)
        run_side = d.ravel()[starts]
        is_trade = run_side != 0
        self.entry = starts[is_trade]
        self.count = len(self.entry)
        self.end = np.append(starts[1:], k * n)[is_trade]  # the flat index after each trade's run
        self.side = run_side[is_trade]
        self.row = self.entry // n
        self.t0 = self.entry - self.row * n
        self.longs, self.shorts = d > 0, d < 0
        self.sign_at = d.astype(np.float64)  # each bar's side as +1.0 / -1.0 (0.0 flat)
        self.any_short = bool(self.shorts.any())
        with np.errstate(over="ignore", invalid="ignore"):
            self.buy_open = np.clip(open_ * (1.0 + self.slip), low, high)
            self.sell_open = np.clip(open_ * (1.0 - self.slip), low, high)
            self.ref = open_[self.t0]  # R: stops and take-profit are measured from the entry bar's open
            self.entry_price = np.where(self.side > 0, self.buy_open[self.t0], self.sell_open[self.t0])
        if not self.count:
            return
        run_id = np.cumsum(boundary.ravel(), dtype=index) - 1
        trade_of_run = np.full(len(starts), -1, dtype=index)
        trade_of_run[is_trade] = np.arange(self.count, dtype=index)
        self.trade_at = trade_of_run[run_id]  # per bar: the trade whose run it is (garbage where d = 0)
        self.ref_at = self.ref[self.trade_at].reshape(k, n)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ratio = close / self.entry_price[self.trade_at].reshape(k, n)  # c_t / P_e of the trade held
            size, keep = self.size, self.keep
            mark = np.where(self.longs, (1.0 - size) + size * (keep * ratio), 1.0)  # E_t / E_e while held
            if self.any_short:
                growth = 1.0
                if self.rate:
                    growth = (1.0 + self.rate) ** (np.arange(n) - self.t0[self.trade_at].reshape(k, n) + 1)
                mark = np.where(self.shorts, 1.0 + size * (keep - growth * ratio), mark)
        self.mark = mark
        self.mark_ruins = bool(self.any_short and (mark <= 0.0).any())  # a short's close at or below 0
        self._extremes: tuple[np.ndarray, ...] | None = None

    def execute(self, execution: Execution, equity: np.ndarray, position: np.ndarray) -> TradeLog:
        """The trade log of these trades with this execution's sl, tp and trail; their equity and
        position (k, n) into `equity` and `position`."""
        k, n, count = self.k, self.n, self.count
        if not count:
            equity[...], position[...] = 1.0, 0
            return TradeLog(
                *(np.zeros(0, dtype=t) for t in (np.int64, np.int64, np.int64, np.int8, np.float64, np.int8))
            )
        side, row, t0, end = self.side, self.row, self.t0, self.end
        open_, high, low, slip = self.open, self.high, self.low, self.slip
        sign = side.astype(np.float64)
        sl, tp, trail = (np.nan if v is None else v for v in (execution.sl, execution.tp, execution.trail))

        # -- intrabar exits: the first bar of each trade's run that reaches its stop or take-profit --
        stop_level = self._stop_level(sl, trail)
        if stop_level is not None:
            hit = (self.longs & (low <= stop_level)) | (self.shorts & (high >= stop_level))
        else:
            hit = np.zeros((k, n), dtype=bool)
        stop_hit = hit
        take = self.ref * (1.0 + sign * tp)  # NaN without a take-profit
        if not np.isnan(tp):
            target_long, target_short = self.ref_at * (1.0 + tp), self.ref_at * (1.0 - tp)
            hit = hit | (self.longs & (high > target_long)) | (self.shorts & (low < target_short))
        exit_at = np.full(count, -1, dtype=np.int64)
        hits = np.flatnonzero(hit)
        if len(hits):
            of = self.trade_at[hits]
            first_hit = np.ones(len(hits), dtype=bool)
            first_hit[1:] = of[1:] != of[:-1]
            exit_at[of[first_hit]] = hits[first_hit]
        intrabar = exit_at >= 0
        by_signal = ~intrabar & (end < (row + 1) * n)
        closed = intrabar | by_signal
        t_exit = np.where(intrabar, exit_at, np.where(by_signal, end, row * n)) - row * n

        # -- exit prices and trade returns --
        kind = np.zeros(count, dtype=np.int8)
        kind[by_signal] = _SIGNAL
        exit_price = np.where(side > 0, self.sell_open[t_exit], self.buy_open[t_exit])  # a signal exit at the open
        if intrabar.any():
            x, tx = exit_at[intrabar], t_exit[intrabar]
            is_stop = stop_hit.ravel()[x]
            kind[intrabar] = np.where(is_stop, _STOP, _TAKE)
            with np.errstate(invalid="ignore"):
                level = stop_level.ravel()[x] if stop_level is not None else np.full(len(x), np.nan)
                stop_fill = np.where(
                    side[intrabar] > 0,
                    np.minimum(open_[tx], level) * (1.0 - slip),
                    np.maximum(open_[tx], level) * (1.0 + slip),
                )
                price = np.where(is_stop, stop_fill, take[intrabar])
            exit_price[intrabar] = np.clip(price, low[tx], high[tx])
        keep = self.keep
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            hours = np.where(intrabar, t_exit - t0 + 1, t_exit - t0)  # a short's hours of interest (rule 3b)
            growth = (1.0 + self.rate) ** hours if self.rate else 1.0
            ret = np.where(
                side > 0,
                (exit_price / self.entry_price) * keep**2 - 1.0,
                keep - growth * exit_price / (self.entry_price * keep),
            )
        ret[~closed] = np.nan
        factor = 1.0 + self.size * ret

        # -- positions and equity --
        held = self.d != 0
        if intrabar.any():  # not held from the bar after an intrabar exit to the end of its run
            after = np.zeros(k * n + 1, dtype=np.int8)
            after[exit_at[intrabar] + 1] = 1
            after[end[intrabar]] -= 1
            np.cumsum(after, out=after)
            held &= ~after[:-1].reshape(k, n).view(bool)
        position[...] = 0
        np.copyto(position, self.d, where=held)
        marked = held.copy()
        marked.ravel()[exit_at[intrabar]] = False  # flat at the close of an intrabar exit
        factors = np.ones(k * n)
        factors[exit_at[intrabar]] = factor[intrabar]
        factors[end[by_signal]] *= factor[by_signal]
        with np.errstate(over="ignore", invalid="ignore"):
            np.cumprod(factors.reshape(k, n), axis=1, out=equity)
            np.multiply(equity, self.mark, out=equity, where=marked)  # E_e times the open trade's mark
        log = TradeLog(row.astype(np.int64), t0.astype(np.int64), np.where(closed, t_exit, -1), side, ret, kind)
        if self.any_short and (self.mark_ruins or (factor <= 0.0).any()):
            ruin = (marked & (self.mark <= 0.0)).ravel()
            ruin[exit_at[intrabar & (factor <= 0.0)]] = True
            at_signal = np.zeros(k * n, dtype=bool)
            at_signal[end[by_signal & (factor <= 0.0)]] = True
            ruin |= at_signal
            if ruin.any():
                log = _ruin(
                    ruin.reshape(k, n), at_signal.reshape(k, n), equity, position, log, self.trade_at, self.size, n
                )
        return log

    def _stop_level(self, sl: float, trail: float) -> np.ndarray | None:
        """Each bar's stop level (k, n) for the trade held (None: no stop): its fixed stop, raised
        (a long) or lowered (a short) by the trailing stop from the extreme of the trade's earlier
        bars (rule 6)."""
        if np.isnan(sl) and np.isnan(trail):
            return None
        ref = self.ref_at
        with np.errstate(invalid="ignore"):
            # R(1 - sl) on a long's bars, R(1 + sl) on a short's (1 - (-sl) is 1 + sl exactly); NaN without a stop-loss
            level = ref * (1.0 - self.sign_at * sl)
            if np.isnan(trail):
                return level
            bars, is_long, base = self._trailing_base()
            trailing = base * np.where(is_long, 1.0 - trail, 1.0 + trail)
            fixed = level.ravel()[bars]
            level.ravel()[bars] = np.where(is_long, np.fmax(fixed, trailing), np.fmin(fixed, trailing))
        return level

    def _trailing_base(self) -> tuple[np.ndarray, ...]:
        """(the bars in trades, whether each is a long's, the trailing base there): max(R, h_{t_e..t-1})
        for a long, min(R, l_{t_e..t-1}) for a short; computed once for every execution."""
        if self._extremes is None:
            self._extremes = _trailing_base(
                self.d, self.trade_at, self.entry, self.side, self.ref, self.high, self.low, self.n
            )
        return self._extremes


def _trailing_base(
    d: np.ndarray,
    trade_at: np.ndarray,
    entry: np.ndarray,
    side: np.ndarray,
    ref: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    n: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """See `_Trades._trailing_base`: the running extreme within each trade, exactly, by rank
    (highs up, lows down) with the trade's number above the rank, so that one accumulate
    restarts at each trade."""
    bars = np.flatnonzero(d.ravel() != 0)  # bars in a trade's run, in order: trades are contiguous
    trade = trade_at[bars].astype(np.int64)
    t = bars % n
    is_long = side[trade] > 0
    high_order, low_order = np.argsort(high, kind="stable"), np.argsort(-low, kind="stable")
    high_rank, low_rank = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    high_rank[high_order], low_rank[low_order] = np.arange(n), np.arange(n)
    key = trade * n + np.where(is_long, high_rank[t], low_rank[t])
    best = np.maximum.accumulate(key) - trade * n
    extreme = np.where(is_long, high[high_order][best], low[low_order][best])  # over bars t_e..t
    before = np.empty(len(bars))
    before[:1] = np.nan
    before[1:] = extreme[:-1]  # over bars t_e..t-1
    before[bars == entry[trade]] = np.nan  # the entry bar: none yet
    r = ref[trade]
    base = np.where(is_long, np.fmax(r, before), np.fmin(r, before))
    return bars, is_long, base


def _ruin(
    ruin: np.ndarray,
    at_signal: np.ndarray,
    equity: np.ndarray,
    position: np.ndarray,
    log: TradeLog,
    trade_at: np.ndarray,
    size: float,
    n: int,
) -> TradeLog:
    """Equity 0 and flat from each ruined backtest's first ruin on; the trade it ruined closed as
    `ruin` (return -1/s), later trades dropped. Changes `equity` and `position` in place."""
    keep = np.ones(len(log.row), dtype=bool)
    exit_, ret, kind = log.exit.copy(), log.ret.copy(), log.kind.copy()
    for i in np.flatnonzero(ruin.any(axis=1)):
        t = int(np.argmax(ruin[i]))
        equity[i, t:] = 0.0
        position[i, t + 1 :] = 0
        lo, hi = np.searchsorted(log.row, [i, i + 1])
        if at_signal[i, t]:  # closed at the open with nothing left: flat over bar t
            position[i, t] = 0
            ruined = lo + int(np.flatnonzero(log.exit[lo:hi] == t)[0])
            keep[lo:hi] &= log.entry[lo:hi] < t
        else:  # by the trade held over bar t
            ruined = int(trade_at[i * n + t])
            keep[lo:hi] &= log.entry[lo:hi] <= t
        exit_[ruined], ret[ruined], kind[ruined] = t, -1.0 / size, _RUIN
    return TradeLog(log.row[keep], log.entry[keep], exit_[keep], log.side[keep], ret[keep], kind[keep])
