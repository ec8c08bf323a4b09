"""Deterministic synthetic hourly candles: the embedded default source, offline.

SYNTHETIC DATA, not market data. Every candle is a pure function of (symbol, open hour): the
random draws for each calendar month are seeded by `sha256(symbol:month)`, and prices are a
geometric random walk from a fixed epoch (2017-01-01 UTC), so a refresh of [a, b) followed by
one of [b, c) stores exactly what a single refresh of [a, c) would.

The walk has per-day volatility regimes, a slowly drifting trend per month (so that a trend
follower has something to find), fat-tailed hourly returns (Student t, 4 degrees of freedom),
valid OHLC (low <= open, close <= high) and volume that rises with the size of the move.
"""

from __future__ import annotations

import hashlib

import numpy as np

from backtest.data.candles import Candles
from backtest.params import HOUR_MS, validate_symbol

SOURCE_NAME = "synthetic"
EPOCH_MS = 1_483_228_800_000  # 2017-01-01T00:00:00Z: synthetic pairs "list" here


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256(":".join(parts).encode()).digest()[:8], "little")


def _pair_profile(symbol: str) -> tuple[float, float, float]:
    """(first price, typical hourly volatility, typical hourly volume) of a synthetic pair."""
    rng = np.random.default_rng(_seed(symbol, "profile"))
    return 10 ** rng.uniform(-2, 4.5), rng.uniform(0.004, 0.012), 10 ** rng.uniform(2, 6)


def _month_draws(symbol: str, month: np.datetime64, hourly_vol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log returns, wick sizes and volume noise for every hour of one calendar month."""
    hours = int(((month + 1).astype("datetime64[h]") - month.astype("datetime64[h]")).astype(int))
    rng = np.random.default_rng(_seed(symbol, str(month)))
    day_vol = hourly_vol * np.exp(0.45 * rng.standard_normal(hours // 24 + 1))
    vol = np.repeat(day_vol, 24)[:hours]
    drift = rng.normal(0.0, 0.35) * hourly_vol * 0.1
    shocks = rng.standard_t(4, hours) / np.sqrt(2.0)
    returns = drift + vol * shocks
    wicks = np.abs(rng.standard_normal((2, hours))) * vol * 0.6
    volume_noise = np.exp(0.35 * rng.standard_normal(hours))
    return returns, wicks, volume_noise


def synthetic_candles(symbol: str, since_ms: int, until_ms: int) -> Candles:
    """Candles with open times in [since, until) on the hour, from the synthetic epoch on."""
    validate_symbol(symbol)
    first = max(EPOCH_MS, -(-since_ms // HOUR_MS) * HOUR_MS)
    if until_ms <= first:
        return Candles.empty()
    epoch_month = np.datetime64(EPOCH_MS, "ms").astype("datetime64[M]")
    last_month = np.datetime64(until_ms - 1, "ms").astype("datetime64[M]")
    price0, hourly_vol, volume0 = _pair_profile(symbol)

    draws = [_month_draws(symbol, m, hourly_vol) for m in np.arange(epoch_month, last_month + 1)]
    returns = np.concatenate([d[0] for d in draws])
    wicks = np.concatenate([d[1] for d in draws], axis=1)
    volume_noise = np.concatenate([d[2] for d in draws])

    log_close = np.log(price0) + np.cumsum(returns)
    close = np.round(np.exp(log_close), 8)
    open_ = np.concatenate(([np.round(price0, 8)], close[:-1]))
    high = np.maximum(np.round(np.maximum(open_, close) * np.exp(wicks[0]), 8), np.maximum(open_, close))
    low = np.minimum(np.round(np.minimum(open_, close) * np.exp(-wicks[1]), 8), np.minimum(open_, close))
    volume = np.round(volume0 * volume_noise * (1.0 + 40.0 * np.abs(returns)), 4)
    open_time = EPOCH_MS + np.arange(len(close), dtype=np.int64) * HOUR_MS

    keep = (open_time >= first) & (open_time < until_ms)
    return Candles(open_time[keep], open_[keep], high[keep], low[keep], close[keep], volume[keep])
