"""The registry of strategies by name: the built-ins, the project's `strategies/` folder and
every folder on `BACKTEST_STRATEGY_PATH` (os.pathsep-separated), imported when first needed.

Imports the contract and the built-ins; nothing here runs a strategy.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backtest.errors import BacktestError, InputError, StrategyError
from backtest.strategies.builtins import BUILTINS
from backtest.strategies.contract import Combo, FunctionStrategy, Param, Strategy, declared_sides
from backtest.strategies.targets import LONG_ONLY

STRATEGY_PATH_ENV = "BACKTEST_STRATEGY_PATH"
# The project's strategies/ folder beside the package: /app/strategies in the image.
PROJECT_STRATEGIES = Path(__file__).resolve().parents[2] / "strategies"
DEFAULT_STRATEGY = "sma_trend"

_REGISTRY: dict[str, Strategy] = {}
_IMPORTED: set[Path] = set()  # strategy modules imported (each once per process)


def register(item: type[Strategy] | Strategy) -> Any:
    """Class decorator (or call) that registers a strategy under its `name`; its `sides` must be
    one of the two declarations (exit 5 otherwise) and is kept as the canonical tuple."""
    instance = item() if isinstance(item, type) else item
    name = getattr(instance, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise InputError(f"strategy name {name!r} must be a Python identifier such as my_strategy")
    sides = declared_sides(instance)
    if instance.sides != sides:
        instance.sides = sides  # ["short", "long"] -> ("long", "short"), for this instance
    if name in _REGISTRY and _origin(_REGISTRY[name]) != _origin(instance):
        files = f"{_origin(_REGISTRY[name])[0]} and {_origin(instance)[0]}"
        raise InputError(f"two strategies are named {name!r} ({files}): rename one")
    _REGISTRY[name] = instance
    return item


def _origin(instance: Strategy) -> tuple[str, str]:
    """(file, qualified name) of the function or class a strategy is made from. The same again is
    the same module imported again (a retried load): no clash."""
    made_from = instance.made_from
    try:
        file = inspect.getfile(made_from)
    except TypeError:
        file = "?"
    return file, made_from.__qualname__


def strategy(
    name: str, params: Sequence[Param], warmup: Callable[[Combo], int], sides: Sequence[str] = LONG_ONLY
) -> Callable:
    """Decorator: register a function `fn(candles, **params) -> one target per bar` as a strategy:
    bool (long/flat), or int8 in {-1, 0, 1} with `sides=("long", "short")`."""

    def decorate(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        register(FunctionStrategy(name, fn, params, warmup, sides))
        return fn

    return decorate


for _builtin in BUILTINS:
    register(_builtin)


def strategy_folders() -> list[Path]:
    """The project's `strategies/` folder and every folder on BACKTEST_STRATEGY_PATH."""
    extra = [Path(p) for p in os.environ.get(STRATEGY_PATH_ENV, "").split(os.pathsep) if p.strip()]
    return [PROJECT_STRATEGIES, *extra]


def load_strategies() -> None:
    """Import every `*.py` module of the strategy folders not imported yet.

    Each module is imported once per process; a folder added to BACKTEST_STRATEGY_PATH later
    (a long-lived process, a test) is imported when next asked. A module that failed to import
    is tried again, so every call reports its error.
    """
    for folder in strategy_folders():
        if not folder.is_dir():
            if folder != PROJECT_STRATEGIES:
                raise InputError(f"{STRATEGY_PATH_ENV} folder {folder} does not exist")
            continue
        for path in sorted(folder.glob("*.py")):
            if not path.name.startswith("_") and path.resolve() not in _IMPORTED:
                _import_file(path)
                _IMPORTED.add(path.resolve())


def _import_file(path: Path) -> None:
    module_name = f"backtest_user_strategies.{path.stem}_{abs(hash(str(path.resolve()))):x}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout is the job's JSON
            spec.loader.exec_module(module)
    except BacktestError:  # the registry's own verdict (two strategies of one name, a bad name)
        raise
    except (Exception, SystemExit) as exc:  # a user's module: the strategy's fault (exit 5), one line
        del sys.modules[module_name]
        if isinstance(exc, SystemExit):
            did = f"it exited (sys.exit({exc.code!r}))"
        else:
            did = f"{type(exc).__name__}: {' '.join(str(exc).split())}"  # one line, whatever the text
        raise StrategyError(f"strategy module {path} failed to import: {did}") from None


def get(name: str) -> Strategy:
    load_strategies()
    if name not in _REGISTRY:
        raise InputError(f"unknown strategy {name!r}: one of {', '.join(names())}")
    return _REGISTRY[name]


def names() -> list[str]:
    load_strategies()
    return sorted(_REGISTRY)


def describe_all() -> list[dict]:
    """Every registered strategy with its parameters and its sides (`["long"]` or `["long",
    "short"]`), as plain JSON."""
    return [
        {
            "name": name,
            "description": get(name).description,
            "seeded": get(name).seeded,
            "sides": list(get(name).sides),
            "params": [p.describe() for p in get(name).params],
        }
        for name in names()
    ]
