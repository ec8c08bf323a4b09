"""The strategy API in one import: what a strategy module (`strategies/*.py`) and a caller need.

    from backtest.strategy import Param, strategy, register, Strategy

The contract is `backtest.strategies.contract`, the registry `backtest.strategies.registry`, grids
`backtest.strategies.grid`; this module only gathers their public names, so that user strategies
keep one stable import whatever the package's inner layout.
"""

from backtest.data.candles import Candles
from backtest.strategies.contract import SEEDED_WARMUP_FACTOR, Combo, Param, Strategy
from backtest.strategies.grid import MAX_COMBINATIONS, Grid, grid_of, make_grid, parse_assignments
from backtest.strategies.registry import (
    DEFAULT_STRATEGY,
    PROJECT_STRATEGIES,
    STRATEGY_PATH_ENV,
    describe_all,
    get,
    load_strategies,
    names,
    register,
    strategy,
)

__all__ = [
    "DEFAULT_STRATEGY",
    "MAX_COMBINATIONS",
    "PROJECT_STRATEGIES",
    "SEEDED_WARMUP_FACTOR",
    "STRATEGY_PATH_ENV",
    "Candles",
    "Combo",
    "Grid",
    "Param",
    "Strategy",
    "describe_all",
    "get",
    "grid_of",
    "load_strategies",
    "make_grid",
    "names",
    "parse_assignments",
    "register",
    "strategy",
]
