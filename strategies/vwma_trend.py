"""Long while the close is above its volume-weighted moving average (an example user strategy).

VWMA_t = sum(c*v) / sum(v) over the last `window` candles (t-window+1..t), defined for t >= window-1;
signal_t = 1 if c_t > VWMA_t * (1 + band/10,000), else 0 (also when those candles traded no volume).
Each window is summed on its own, not from running totals, so a signal depends on its window's
candles only: the warm-up is exactly window-1 candles (`python -m backtest check-strategy vwma_trend`).
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from backtest.strategy import Param, strategy


@strategy(
    "vwma_trend",
    params=[
        Param("window", "5d", low=2, high=10_000, bars=True, help="VWMA window"),
        Param("band", 0.0, low=0.0, high=1_000.0, kind=float, help="margin above the VWMA, in bps"),
    ],
    warmup=lambda p: p["window"] - 1,
)
def vwma_trend(candles, window, band):
    """long while the close is above its volume-weighted moving average (plus `band` bps)"""
    signal = np.zeros(len(candles), dtype=bool)
    if len(candles) >= window:
        volume = sliding_window_view(candles.volume, window).sum(axis=1)
        traded = sliding_window_view(candles.close * candles.volume, window).sum(axis=1)
        close = candles.close[window - 1 :]
        signal[window - 1 :] = (volume > 0) & (close * volume > traded * (1 + band / 10_000))
    return signal
