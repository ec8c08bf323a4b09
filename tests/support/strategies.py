"""Strategy modules a test drops into a folder on BACKTEST_STRATEGY_PATH (the `strategy_folder`
fixture): a user's strategy in the class form, one that looks ahead at every bar, and two that
look ahead rarely (only before a large move)."""

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


def bollinger_peek(name: str, ahead: int) -> str:
    """A sparse peek: a Bollinger-band reversion strategy (long while the close is below the lower
    band) that also goes long `ahead` bars before a one-bar rise of more than `rise` % (at t when
    c_{t+ahead} > c_{t+ahead-1} (1 + rise/100); `rise` 1000: never, the honest strategy). It
    changes only the few bars that many bars before a large move."""
    return f'''
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from backtest.strategy import Param, strategy


@strategy(
    "{name}",
    params=[
        Param("window", "1d", low=2, high=10_000, bars=True),
        Param("width", 2.0, low=0.0, high=10.0, kind=float),
        Param("rise", 3.0, low=0.0, high=1000.0, kind=float),
    ],
    warmup=lambda p: p["window"] - 1,
)
def {name}(candles, window, width, rise):
    """long below the lower Bollinger band, and {ahead} bar(s) before a rise of more than `rise` %: looks ahead"""
    ahead = {ahead}
    close = candles.close
    out = np.zeros(len(close), dtype=bool)
    if len(close) >= window:
        windows = sliding_window_view(close, window)
        lower = windows.mean(axis=1) - width * windows.std(axis=1)
        out[window - 1 :] = close[window - 1 :] < lower
    rises = np.flatnonzero(close[1:] > close[:-1] * (1 + rise / 100)) + 1  # c_j > c_{{j-1}} (1 + rise %)
    out[rises[rises >= ahead] - ahead] = True
    return out
'''


# Long on the bar before a one-bar rise of more than 3 %, and 5 bars before such a rise.
BOLLINGER_PEEK_NEXT = bollinger_peek("bollinger_peek_next", 1)
BOLLINGER_PEEK_AHEAD = bollinger_peek("bollinger_peek_ahead", 5)


def drop(folder: Path, name: str, source: str) -> Path:
    """Write a strategy module `name`.py into a strategy folder."""
    path = folder / f"{name}.py"
    path.write_text(source.lstrip())
    return path
