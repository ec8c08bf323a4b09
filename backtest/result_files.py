"""The names of the files one (pair, strategy) result leaves in its results folder: written by
`backtest.job`, read by the rank step, the report and the UI (one place for each name).

    {symbol}.json               the result (its presence means the pair's files are whole)
    {symbol}.equity.parquet     the reported curve: open_time, equity, position [, fold]
    {symbol}.oos.equity.parquet with a hold-out: the chosen combination's out-of-sample curve
    {symbol}.trades.parquet     the chosen combination's trades (`trade_stats.trades_table`)
    {symbol}.error.json         why the pair failed (instead of the files above)
"""

from __future__ import annotations


def result_file(symbol: str) -> str:
    return f"{symbol}.json"


def equity_file(symbol: str) -> str:
    return f"{symbol}.equity.parquet"


def oos_equity_file(symbol: str) -> str:
    return f"{symbol}.oos.equity.parquet"


def trades_file(symbol: str) -> str:
    return f"{symbol}.trades.parquet"


def error_file(symbol: str) -> str:
    return f"{symbol}.error.json"
