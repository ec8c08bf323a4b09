"""Candles and where they live: the candle type and files, the store (partitioned Parquet on S3 or a
local folder) with its locks, the exchange client, the incremental refresh, synthetic candles.

May import `backtest.errors` and `backtest.params` only: nothing about strategies or simulation.
"""
