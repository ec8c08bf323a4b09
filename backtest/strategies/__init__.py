"""Strategies: the contract (`contract`), the registry by name (`registry`), parameter grids
(`grid`), the six built-ins (`builtins`, with `exact` arithmetic) and the look-ahead check.

May import `backtest.data`, `backtest.errors` and `backtest.params`; never the simulation or the job.
Strategy authors import from `backtest.strategy`, which gathers the public names.
"""
