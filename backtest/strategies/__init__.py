"""Strategies: the contract (`contract`), what a signal may be (`targets`: bool or int8 targets,
the sides a strategy declares), the registry by name (`registry`), parameter grids (`grid`), the
six built-ins (`builtins`, with `exact` arithmetic and the vectorised `states`) and the
look-ahead check (`lookahead`).

May import `backtest.data`, `backtest.errors` and `backtest.params`; never the simulation or the job.
Strategy authors import from `backtest.strategy`, which gathers the public names.
"""
