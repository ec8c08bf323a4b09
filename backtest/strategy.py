"""The strategy API in one import: what a strategy module (`strategies/*.py`) and a caller need.

    from backtest.strategy import Param, strategy, register, Strategy
    from backtest.strategy import LONG_SHORT, TARGET_DTYPE  # a strategy with a short side

A signal is bool (True = long, False = flat) or, from a strategy that declares
`sides = LONG_SHORT` (`("long", "short")`; the `@strategy(..., sides=LONG_SHORT)` argument for a
function), int8 targets in {-1, 0, 1} (`np.int8`, TARGET_DTYPE): short, flat, long.

The contract is `backtest.strategies.contract`, what a signal may be `backtest.strategies.targets`,
the registry `backtest.strategies.registry`, grids `backtest.strategies.grid`; this module only gathers their public names, so that user strategies
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
from backtest.strategies.targets import LONG_ONLY, LONG_SHORT, TARGET_DTYPE

__all__ = [
    "DEFAULT_STRATEGY",
    "LONG_ONLY",
    "LONG_SHORT",
    "MAX_COMBINATIONS",
    "PROJECT_STRATEGIES",
    "SEEDED_WARMUP_FACTOR",
    "STRATEGY_PATH_ENV",
    "TARGET_DTYPE",
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
