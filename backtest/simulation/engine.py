"""The execution engine every strategy shares: positions, fills, trades and equity, many
combinations at once as (k, n) arrays.

Exact semantics, for in-window bars t = 0..n-1 with open, high, low, close o_t, h_t, l_t, c_t;
fee f = fee_bps / 10,000 per side; slippage k = slippage_bps / 10,000; size s in (0, 1]; borrow
r = borrow_bps_per_day / 10,000 / 24 per hour (`backtest.simulation.execution.Execution`).

1. Targets. A strategy's target per bar is in {-1, 0, +1} (short, flat, long), decided at bar
   t's close (a bool signal: True = +1). `direction` long keeps max(target, 0), short
   min(target, 0), long_short both.
2. Desired position over bar t: d_t = target_{t-1}, d_0 = 0 (every backtest starts flat). A run
   is a maximal stretch of bars with the same d.
3. At bar t's open, in this order: (a) a held position whose side differs from d_t is closed at
   the open (a reversal is two fills, two fees); (b) a short still held pays hour t's borrow
   interest (its debt in units grows by 1 + r); (c) a trade opens when d_t != 0 and
   d_t != d_{t-1}: only at the start of a run, so after a stop or take-profit exit the position
   stays flat until d changes.
4. Fills. Every fill price is clamped into the bar's range [l_t, h_t]. Slippage is adverse on
   every fill except take-profits: buys at P(1+k), sells at P(1-k), before the clamp.
5. Accounting in cash and units (fees in the asset received). Entry with equity E (all cash):
   allocation A = sE. Long: units q = A(1-f)/P, cash E - A. Short: q = A/P, cash E + qP(1-f),
   debt q(1+r) (the entry hour's interest). Exit: long cash += qP_x(1-f); short
   cash -= debt P_x/(1-f). Equity at each close: cash + q c_t long, cash - debt c_t short, cash
   flat. Equity at or below 0 (at a close, or right after an exit fill) ruins the account: equity
   0 and flat from there to the window's end, no more entries; the trade is closed with exit
   kind `ruin` and return -1/s. (A long cannot be ruined: its equity stays above 0.)
6. Stops and take-profit, per trade, from the entry bar's open R = o_{t_e} (not the fill),
   active from the entry bar itself (its whole range is taken to come after its open):
   long stop level = max(R(1-sl), (1-trail) max(R, h_{t_e}, ..., h_{t-1})) (a bar's own high
   raises the trailing level from the next bar on); it fires when l_t <= level and fills at
   min(o_t, level)(1-k), clamped. Take-profit fires when h_t > R(1+tp) and fills at R(1+tp),
   clamped (no better-open fill). Short: mirrored (R(1+sl), (1+trail) min(R, l_{t_e}, ...,
   l_{t-1}); fires when h_t >= level, fills at max(o_t, level)(1+k); take-profit when
   l_t < R(1-tp) at R(1-tp)). When both could fire in one bar, the stop wins.
7. A trade's return: long (P_x/P_e)(1-f)^2 - 1; short (1-f) - (1+r)^m P_x/(P_e(1-f)), m the
   hours of interest paid (the entry bar's, and one per later bar held at its open); equity
   after it E_x = E_e(1 + s ret). `position` is the side held during bar t (a bar in which a stop
   fires counts as held).

With s = 1, k = 0, long only and no stops, equity is computed as it always was, by the product
of per-bar factors (`classic_equity`, bit for bit today's): E_0 = 1 and
    held  (p_{t-1}=1, p_t=1): E_t = E_{t-1} c_t / c_{t-1}
    entry (0 -> 1):          E_t = E_{t-1} (1-f) c_t / o_t
    exit  (1 -> 0):          E_t = E_{t-1} (o_t / c_{t-1}) (1-f)
Otherwise `backtest.simulation.fills` computes it from each trade's closed form (above), with
no Python loop per bar or per trade. Prices near the top of the float64 range overflow the
equity; a non-finite result is refused as bad data (DataError), never turned into a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backtest.data.candles import Candles, find_gaps
from backtest.simulation.execution import Execution
from backtest.simulation.fills import simulate_trades
from backtest.simulation.metrics import METRIC_NAMES, compute_metrics_block
from backtest.simulation.trades import KIND_CODES, Simulation, TradeLog
from backtest.strategies.exact import require_finite

CLASSIC = Execution()  # long/flat, size 1, no stops, no slippage: today's engine


def desired_positions(targets: np.ndarray, first_bar: int, bars: int, direction: str = "long") -> np.ndarray:
    """d over the bars [first_bar, first_bar+bars) for each row of `targets` (k, n), int8:
    d_0 = 0, d_t = target_{t-1}, kept to `direction`'s side(s)."""
    targets = np.atleast_2d(targets)
    d = np.zeros((len(targets), bars), dtype=np.int8)
    if bars > 1:
        d[:, 1:] = targets[:, first_bar : first_bar + bars - 1]
        if direction == "long":
            np.maximum(d, 0, out=d)
        elif direction == "short":
            np.minimum(d, 0, out=d)
    return d


def simulate(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    desired: np.ndarray,
    fee: float,
    executions: Sequence[Execution] | Execution = CLASSIC,
) -> Simulation:
    """Every row of `desired` (k, n) traded by each of the E executions (one, or the run's stop
    levels: they differ only in sl, tp and trail), by the rules above: backtest i * E + e is
    row i with execution e."""
    desired = np.atleast_2d(desired)
    executions = [executions] if isinstance(executions, Execution) else list(executions)
    if len(executions) == 1 and executions[0].classic:
        return _classic(open_, close, desired, fee)
    return simulate_trades(open_, high, low, close, desired, fee, executions)


def classic_equity(open_: np.ndarray, close: np.ndarray, positions: np.ndarray, fee: float) -> np.ndarray:
    """E per bar for each row of long/flat `positions` (k, n) bool, by the per-bar factors above."""
    positions = np.atleast_2d(positions)
    k, n = positions.shape
    equity = np.ones((k, n), dtype=np.float64)
    if n < 2:
        return equity
    keep = 1.0 - fee
    prev, cur = positions[:, :-1], positions[:, 1:]
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        held = close[1:] / close[:-1]
        entry = keep * close[1:] / open_[1:]
        exit_ = (open_[1:] / close[:-1]) * keep
        factor = np.select([prev & cur, cur, prev], [held, entry, exit_], 1.0)
        np.cumprod(factor, axis=1, out=equity[:, 1:])
    require_finite(equity, "equity curve")
    return equity


def _classic(open_: np.ndarray, close: np.ndarray, desired: np.ndarray, fee: float) -> Simulation:
    """Long/flat at size 1 without stops or slippage: position = d; a trade from each 0 -> 1 to
    the next 1 -> 0, return (o_x / o_e)(1-f)^2 - 1."""
    held = desired > 0
    equity = classic_equity(open_, close, held, fee)
    k, n = held.shape
    edge = np.zeros((k, n + 1), dtype=np.int8)  # +1 at an entry bar, -1 at an exit bar
    edge[:, 1:n] = np.diff(held.view(np.int8), axis=1)
    rows, entry = np.nonzero(edge[:, :n] > 0)
    exit_rows, exit_bars = np.nonzero(edge[:, :n] < 0)
    exit_ = np.full(len(entry), -1, dtype=np.int64)
    closed = np.searchsorted(rows, exit_rows, side="left") + _rank_within(exit_rows)  # k-th exit closes k-th entry
    exit_[closed] = exit_bars
    kind = np.where(exit_ >= 0, KIND_CODES["signal"], 0).astype(np.int8)
    ret = np.full(len(entry), np.nan)
    done = exit_ >= 0
    ret[done] = (open_[exit_[done]] / open_[entry[done]]) * (1.0 - fee) ** 2 - 1.0
    log = TradeLog(rows, entry.astype(np.int64), exit_, np.ones(len(entry), dtype=np.int8), ret, kind)
    return Simulation(equity, desired.astype(np.int8, copy=False), log)


def _rank_within(rows: np.ndarray) -> np.ndarray:
    """For sorted `rows`, each item's index among the items of its row (0, 1, 2, 0, 1, ...)."""
    if not len(rows):
        return np.zeros(0, dtype=np.int64)
    first = np.searchsorted(rows, rows, side="left")
    return np.arange(len(rows)) - first


@dataclass(frozen=True)
class Segment:
    """Bars [first, stop) of the candles read, backtested on their own: flat at `first`, warmed up
    by the targets of the bars before it. A run's window, a hold-out's two parts and each
    walk-forward fold's training and test windows are segments of the same targets."""

    first: int
    stop: int
    candles: Candles  # the segment's bars
    gaps: int

    @classmethod
    def of(cls, candles: Candles, first: int, stop: int) -> Segment:
        part = candles.slice(first, stop)
        return cls(first, stop, part, sum(g.hours for g in find_gaps(part.open_time)))

    def run(self, targets: np.ndarray, fee: float, executions: Sequence[Execution] | Execution = CLASSIC) -> Simulation:
        """Each target row over this segment, traded by each execution (row i * E + e)."""
        direction = (executions if isinstance(executions, Execution) else executions[0]).direction
        desired = desired_positions(targets, self.first, self.stop - self.first, direction)
        part = self.candles
        return simulate(part.open, part.high, part.low, part.close, desired, fee, executions)

    def metrics(
        self,
        targets: np.ndarray,
        fee: float,
        executions: Sequence[Execution] | Execution = CLASSIC,
        names: Sequence[str] = METRIC_NAMES,
    ) -> tuple[list[dict], Simulation]:
        """(metrics `names` of each target row and execution, the simulation) over this segment."""
        sim = self.run(targets, fee, executions)
        return compute_metrics_block(sim.equity, sim.position, self.candles.close, self.gaps, sim.counts(), names), sim
