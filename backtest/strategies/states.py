"""Vectorised building blocks of the built-ins' targets (`backtest.strategies.builtins`): a state
held between events (`hold_state`, the two-state rules of `donchian_breakout` and
`rsi_reversion`), a target from its long and short conditions (`sign_of`), and rolling maxima
and minima over any window (`RollingExtremes`, the Donchian channels). All exact: comparisons,
selections and max/min only, no arithmetic on prices.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def sign_of(long_: np.ndarray, short: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = long_ - short as int8 targets (+1, 0, -1) from two bool arrays that are never both
    True at a bar (the caller makes sure: a tie of `>` and `<` cannot be both, a state wins)."""
    return np.subtract(long_.view(np.int8), short.view(np.int8), out=out)


def hold_state(enter: np.ndarray, leave: np.ndarray, start: int) -> np.ndarray:
    """A state per bar (bool, start + len(enter) bars): 0 before bar `start`; from it, with
    enter[i] and leave[i] the events of bar start + i: 1 on `enter`, else 0 on `leave`, else the
    previous bar's state."""
    n = start + len(enter)
    has_event = np.ones(n, dtype=bool)  # state 0 until start: an event "0" at each of those bars
    np.logical_or(enter, leave, out=has_event[start:])
    event = np.zeros(n, dtype=bool)  # the state the bar's event sets
    event[start:] = enter
    last = np.maximum.accumulate(np.where(has_event, np.arange(n), 0))  # each bar's last event
    return event[last]


class RollingExtremes:
    """The max (or, with np.minimum, the min) of every w consecutive values, for any w.

    Doubling levels, built once and shared by every window asked: L_1 = x, L_2k[i] =
    reduce(L_k[i], L_k[i+k]) (the extreme of x[i..i+2k-1]); then for w with p the largest power
    of two <= w, window_w[i] = reduce(L_p[i], L_p[i+w-p]), i = 0..n-w (two overlapping windows of
    p cover x[i..i+w-1]). O(n log w) instead of O(n w), and exact (the extreme of the same values).
    """

    def __init__(self, values: np.ndarray, reduce: Callable[..., np.ndarray]):
        self._reduce = reduce
        self._levels = {1: values}
        self._windows: dict[int, np.ndarray] = {}

    def of(self, window: int) -> np.ndarray:
        """The extreme of values[i..i+window-1] at index i, for i = 0..n-window (1 <= window <= n)."""
        window = int(window)
        if window not in self._windows:
            p = 1 << (window.bit_length() - 1)
            k = 1
            while k < p:
                if 2 * k not in self._levels:
                    level = self._levels[k]
                    self._levels[2 * k] = self._reduce(level[:-k], level[k:])
                k *= 2
            level = self._levels[p]
            shift = window - p
            self._windows[window] = level if shift == 0 else self._reduce(level[: len(level) - shift], level[shift:])
        return self._windows[window]
