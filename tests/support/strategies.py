"""Strategy modules a test drops into a folder on BACKTEST_STRATEGY_PATH (the `strategy_folder`
fixture): a user's strategy in the class form, and one that looks ahead."""

from __future__ import annotations

from pathlib import Path

# Class form, vectorised over combinations: long while the close is above `level` of the way from
# the lowest low to the highest high of the last `window` candles. Causal, exact, warm-up window-1.
RANGE_POSITION = """
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from backtest.strategy import Param, Strategy, register


@register
class RangePosition(Strategy):
    name = "range_position"
    description = "long while the close is in the top part of its recent high-low range"
    params = (
        Param("window", "2d", low=2, high=10_000, bars=True),
        Param("level", 0.5, low=0.0, high=1.0, kind=float),
    )

    def warmup_bars(self, params):
        return params["window"] - 1

    def signals(self, candles, combos):
        out = np.zeros((len(combos), len(candles)), dtype=bool)
        for row, combo in enumerate(combos):
            w = combo["window"]
            if len(candles) >= w:
                high = sliding_window_view(candles.high, w).max(axis=1)
                low = sliding_window_view(candles.low, w).min(axis=1)
                out[row, w - 1 :] = candles.close[w - 1 :] - low > combo["level"] * (high - low)
        return out
"""

# Function form, cheating: long when the next close is higher (reads c_{t+1}).
PEEK_NEXT = '''
import numpy as np

from backtest.strategy import Param, strategy


@strategy("peek_next", params=[Param("lag", 1, low=1, high=10)], warmup=lambda p: p["lag"])
def peek_next(candles, lag):
    """long when the next close is higher: looks ahead"""
    out = np.zeros(len(candles), dtype=bool)
    out[:-1] = candles.close[1:] > candles.close[:-1]
    return out
'''


def drop(folder: Path, name: str, source: str) -> Path:
    """Write a strategy module `name`.py into a strategy folder."""
    path = folder / f"{name}.py"
    path.write_text(source.lstrip())
    return path
