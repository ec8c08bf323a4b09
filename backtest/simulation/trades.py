"""A backtest's trades and what the metrics need of them: `Simulation` (k backtests' equity,
positions and trade log), `TradeLog` (every trade as flat arrays), `Trade` (one, for reports).
Made by `backtest.simulation.engine` and `backtest.simulation.fills`; imports only numpy and
`backtest.simulation.execution` / `metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backtest.simulation.execution import EXIT_KINDS
from backtest.simulation.metrics import TradeCounts

KIND_CODES = {name: i + 1 for i, name in enumerate(EXIT_KINDS)}  # 0: still open at the window's end


@dataclass(frozen=True)
class Trade:
    """One trade: bars of its entry and exit (None: open at the window's end), side (+1 / -1),
    return (None while open) and exit kind (`EXIT_KINDS`)."""

    entry: int
    exit: int | None
    side: int
    ret: float | None
    kind: str | None


@dataclass(frozen=True)
class TradeLog:
    """Every trade of k backtests as flat arrays, in (row, entry) order: `row`, `entry` and
    `exit` bars (-1: open), `side`, `ret` (NaN: open), `kind` (0: open, else KIND_CODES)."""

    row: np.ndarray
    entry: np.ndarray
    exit: np.ndarray
    side: np.ndarray
    ret: np.ndarray
    kind: np.ndarray

    def of(self, i: int) -> list[Trade]:
        lo, hi = np.searchsorted(self.row, [i, i + 1])
        return [
            Trade(
                int(self.entry[j]),
                None if self.exit[j] < 0 else int(self.exit[j]),
                int(self.side[j]),
                None if self.kind[j] == 0 else float(self.ret[j]),
                None if self.kind[j] == 0 else EXIT_KINDS[self.kind[j] - 1],
            )
            for j in range(lo, hi)
        ]


@dataclass(frozen=True)
class Simulation:
    """k backtests over the same bars: `equity` (k, n) float64, `position` (k, n) int8, and
    per row the counts the metrics report (`entries`, `long_entries`, `short_entries`,
    `closed`, `wins`, `exit_counts` (k, 4) in EXIT_KINDS order)."""

    equity: np.ndarray
    position: np.ndarray
    log: TradeLog

    @property
    def k(self) -> int:
        return len(self.equity)

    def _count(self, mask: np.ndarray) -> np.ndarray:
        return np.bincount(self.log.row[mask], minlength=self.k)

    @property
    def entries(self) -> np.ndarray:
        return np.bincount(self.log.row, minlength=self.k)

    @property
    def long_entries(self) -> np.ndarray:
        return self._count(self.log.side > 0)

    @property
    def short_entries(self) -> np.ndarray:
        return self._count(self.log.side < 0)

    @property
    def closed(self) -> np.ndarray:
        return self._count(self.log.kind > 0)

    @property
    def wins(self) -> np.ndarray:
        return self._count((self.log.kind > 0) & (self.log.ret > 0))

    @property
    def exit_counts(self) -> np.ndarray:
        return np.stack([self._count(self.log.kind == code) for code in KIND_CODES.values()], axis=1)

    def counts(self) -> TradeCounts:
        return TradeCounts(
            self.entries, self.long_entries, self.short_entries, self.closed, self.wins, self.exit_counts
        )

    def trades(self, i: int) -> list[Trade]:
        return self.log.of(i)

    def row(self, i: int) -> Simulation:
        """Backtest i alone (a block of one)."""
        lo, hi = np.searchsorted(self.log.row, [i, i + 1])
        log = TradeLog(*(a[lo:hi] for a in _fields(self.log)))
        log = TradeLog(np.zeros(hi - lo, dtype=log.row.dtype), *_fields(log)[1:])
        return Simulation(self.equity[i : i + 1], self.position[i : i + 1], log)

    def prefix(self, bars: int) -> Simulation:
        """The first `bars` bars: the same backtests over a window that ends earlier (bit for bit
        the run of that window: flat at the same bar, the same products in the same order). A
        trade still open at the cut is open; one closing after it is not closed yet."""
        log = self.log
        keep = log.entry < bars
        open_now = keep & (log.exit >= bars)
        exit_, kind, ret = log.exit.copy(), log.kind.copy(), log.ret.copy()
        exit_[open_now], kind[open_now], ret[open_now] = -1, 0, np.nan
        cut = TradeLog(log.row[keep], log.entry[keep], exit_[keep], log.side[keep], ret[keep], kind[keep])
        return Simulation(self.equity[:, :bars], self.position[:, :bars], cut)


def _fields(log: TradeLog) -> tuple[np.ndarray, ...]:
    return (log.row, log.entry, log.exit, log.side, log.ret, log.kind)


def stitch(parts: Sequence[Simulation]) -> Simulation:
    """Single backtests over consecutive windows as one (a walk-forward's test windows): each
    part's equity goes on from the previous part's last close; bars and trades are renumbered."""
    equities, positions, logs, scale, offset = [], [], [], 1.0, 0
    for part in parts:
        equities.append(scale * part.equity[0])  # part.equity[0][0] is 1
        positions.append(part.position[0])
        log = part.log
        logs.append((log.row, log.entry + offset, np.where(log.exit < 0, -1, log.exit + offset), *_fields(log)[3:]))
        scale, offset = scale * part.equity[0][-1], offset + part.equity.shape[1]
    log = TradeLog(*(np.concatenate(arrays) for arrays in zip(*logs, strict=True)))
    return Simulation(np.concatenate(equities)[np.newaxis], np.concatenate(positions)[np.newaxis], log)
