"""The strategy contract, the registry of strategies by name, and parameter grids.

A strategy turns one pair's candles into a long/flat signal per bar: `signal_t` is decided at
bar t's close, from candles 0..t only (the look-ahead check, `backtest.lookahead`, proves it).
Execution is the engine's, the same for every strategy: position `p_t = signal_{t-1}`, fills at
the next open, fee per side (see `backtest.engine`).

A strategy declares:

- `params`: each parameter's name, type (int or float), default and bounds; a `bars` parameter
  is a number of hourly bars and also accepts durations (`12h`, `15d`, `2w`);
- `warmup_bars(params)`: how many candles before the window it reads (a fixed-lookback
  strategy: its lookback; one with a seed or a state: 5x its longest lookback, see `SEEDED`);
- `signals(candles, combos)`: the signals of several parameter combinations at once, a k x n
  bool array (the engine calls it in blocks, so memory stays bounded for any grid);
- optionally `reject(params)`: why a combination is invalid (e.g. `fast >= slow`); a grid skips
  and counts those.

Two ways to write one: subclass `Strategy` (vectorised over combinations) or decorate a function
of one combination with `@strategy(...)`. Either way it is registered under its name. The
built-ins are in `backtest.builtins`; users' own live in the project's `strategies/` folder or
any folder on `BACKTEST_STRATEGY_PATH` (os.pathsep-separated), imported when first needed.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from backtest.candles import Candles
from backtest.errors import DataError, InputError
from backtest.params import parse_bars, parse_value_list, window_label

STRATEGY_PATH_ENV = "BACKTEST_STRATEGY_PATH"
PROJECT_STRATEGIES = Path(__file__).resolve().parent.parent / "strategies"  # /app/strategies in the image
DEFAULT_STRATEGY = "sma_trend"
SEEDED_WARMUP_FACTOR = 5  # seeded or stateful strategies read 5x their longest lookback first
MAX_COMBINATIONS = 100_000
Combo = dict[str, Any]  # one parameter combination: name -> value (bars as an int count)


@dataclass(frozen=True)
class Param:
    """One parameter of a strategy: its type, default and inclusive bounds."""

    name: str
    default: int | float | str
    low: float | None = None
    high: float | None = None
    bars: bool = False  # a number of hourly bars: also accepts 12h, 15d, 2w
    kind: type = int  # int or float
    help: str = ""

    def parse(self, text: str | int | float) -> int | float:
        """One value, checked against the bounds."""
        if self.bars:
            value: int | float = parse_bars(text, self.name)
        else:
            try:
                value = self.kind(str(text).strip()) if self.kind is float else int(str(text).strip())
            except ValueError:
                raise InputError(f"invalid {self.name} {text!r}: must be {self._kind_text()}") from None
            if not math.isfinite(value):
                raise InputError(f"invalid {self.name} {text!r}: must be finite")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise InputError(f"invalid {self.name} {text!r}: must be {self.bounds_text()}")
        return value

    def parse_values(self, text: str | int | float) -> list[tuple[str, int | float]]:
        """A value, a comma list or a range `a:b:step`, as (label, value) pairs."""
        step = partial(parse_bars, what=f"{self.name} step") if self.bars else self._parse_step
        return parse_value_list(text, self.parse, step, self.label)

    def label(self, value: int | float) -> str:
        return window_label(int(value)) if self.bars else f"{value:g}"

    def bounds_text(self) -> str:
        unit = " bars" if self.bars else ""
        if self.high is None:
            return f"at least {self.low:g}{unit}"
        return f"from {self.low:g} to {self.high:g}{unit}"

    def _kind_text(self) -> str:
        return "a whole number" if self.kind is int else "a number"

    def _parse_step(self, text: str) -> int | float:
        try:
            step = self.kind(text.strip())
        except ValueError:
            raise InputError(f"invalid {self.name} step {text!r}: must be {self._kind_text()}") from None
        if not step > 0:
            raise InputError(f"invalid {self.name} step {text!r}: must be positive")
        return step

    def describe(self) -> dict:
        """The parameter as plain JSON (for the trigger form and `list-strategies`)."""
        return {"name": self.name, "type": self.kind.__name__, "bars": self.bars, "default": self.default}


class Strategy:
    """Base class of every strategy; see the module docstring for the contract."""

    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    description: ClassVar[str] = ""
    # A seed or a state: the signal depends on where the candles read begin (so the warm-up
    # check allows a small share of changed bars, `lookahead.SEEDED_TOLERANCE`).
    seeded: ClassVar[bool] = False

    def warmup_bars(self, params: Combo) -> int:
        raise NotImplementedError

    def lookback(self, params: Combo) -> int:
        """Candles before the first bar whose signal is defined (a run needs lookback + 1 candles)."""
        return self.warmup_bars(params)

    def signals(self, candles: Candles, combos: Sequence[Combo]) -> np.ndarray:
        """A (len(combos), len(candles)) bool array: signal_t of each combination."""
        raise NotImplementedError

    def checked_signals(self, candles: Candles, combos: Sequence[Combo]) -> np.ndarray:
        """`signals`, refused as bad data (exit 3) unless it is one bool row per combination and bar."""
        signals = np.asarray(self.signals(candles, combos), dtype=bool)
        if signals.shape != (len(combos), len(candles)):
            raise DataError(
                f"strategy {self.name} returned signals of shape {signals.shape}, expected {(len(combos), len(candles))}"
            )
        return signals

    def reject(self, params: Combo) -> str | None:
        """Why this combination is invalid, or None (a grid skips and counts rejected ones)."""
        return None

    def defaults(self) -> Combo:
        return {p.name: p.parse(p.default) for p in self.params}

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.params)
        raise InputError(f"strategy {self.name} has no parameter {name!r} (its parameters: {known})")


class FunctionStrategy(Strategy):
    """A strategy from a function of one combination: `signal(candles, **params) -> bool array`."""

    def __init__(
        self, name: str, fn: Callable[..., np.ndarray], params: Sequence[Param], warmup: Callable[[Combo], int]
    ):
        self.name, self.params, self._fn, self._warmup = name, tuple(params), fn, warmup
        self.description = (fn.__doc__ or "").strip().split("\n")[0]

    def warmup_bars(self, params: Combo) -> int:
        return int(self._warmup(params))

    def signals(self, candles: Candles, combos: Sequence[Combo]) -> np.ndarray:
        return np.stack([np.asarray(self._fn(candles, **combo), dtype=bool) for combo in combos])


_REGISTRY: dict[str, Strategy] = {}
_IMPORTED: set[Path] = set()  # strategy modules imported (each once per process)


def register(item: type[Strategy] | Strategy) -> Any:
    """Class decorator (or call) that registers a strategy under its `name`."""
    instance = item() if isinstance(item, type) else item
    name = getattr(instance, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise InputError(f"strategy name {name!r} must be a Python identifier such as my_strategy")
    if name in _REGISTRY and _origin(_REGISTRY[name]) != _origin(instance):
        files = f"{_origin(_REGISTRY[name])[0]} and {_origin(instance)[0]}"
        raise InputError(f"two strategies are named {name!r} ({files}): rename one")
    _REGISTRY[name] = instance
    return item


def _origin(instance: Strategy) -> tuple[str, str]:
    """(file, qualified name) of the function or class a strategy is made from. The same again is
    the same module imported again (a retried load): no clash."""
    made_from = instance._fn if isinstance(instance, FunctionStrategy) else type(instance)
    try:
        file = inspect.getfile(made_from)
    except TypeError:
        file = "?"
    return file, made_from.__qualname__


def strategy(name: str, params: Sequence[Param], warmup: Callable[[Combo], int]) -> Callable:
    """Decorator: register a function `fn(candles, **params) -> bool per bar` as a strategy."""

    def decorate(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        register(FunctionStrategy(name, fn, params, warmup))
        return fn

    return decorate


def strategy_folders() -> list[Path]:
    """The project's `strategies/` folder and every folder on BACKTEST_STRATEGY_PATH."""
    extra = [Path(p) for p in os.environ.get(STRATEGY_PATH_ENV, "").split(os.pathsep) if p.strip()]
    return [PROJECT_STRATEGIES, *extra]


def load_strategies() -> None:
    """Import the built-ins and every `*.py` module of the strategy folders not imported yet.

    Each module is imported once per process; a folder added to BACKTEST_STRATEGY_PATH later
    (a long-lived process, a test) is imported when next asked. A module that failed to import
    is tried again, so every call reports its error.
    """
    import backtest.builtins  # noqa: F401  (registers the built-ins)

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
        spec.loader.exec_module(module)
    except InputError:
        raise
    except Exception as exc:  # a user's module: report it as one line, whatever it raised
        del sys.modules[module_name]
        message = " ".join(str(exc).split())  # one line, whatever the exception's text
        raise InputError(f"strategy module {path} failed to import: {type(exc).__name__}: {message}") from None


def get(name: str) -> Strategy:
    load_strategies()
    if name not in _REGISTRY:
        raise InputError(f"unknown strategy {name!r}: one of {', '.join(names())}")
    return _REGISTRY[name]


def names() -> list[str]:
    load_strategies()
    return sorted(_REGISTRY)


# -- grids ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """The parameter combinations of one strategy: the cartesian product of each parameter's values.

    `values[name]` lists (label, value) pairs; `combos` are the valid combinations in product
    order, `labels` their spellings; `skipped` counts those the strategy rejected.
    """

    strategy: Strategy
    values: dict[str, list[tuple[str, int | float]]]
    combos: list[Combo]
    labels: list[dict[str, str]]
    skipped: int
    spec: dict[str, str]  # as the user wrote each parameter's values

    @property
    def is_grid(self) -> bool:
        return len(self.combos) + self.skipped > 1

    def warmup_bars(self) -> int:
        return max(self.strategy.warmup_bars(combo) for combo in self.combos)

    def params_json(self, i: int) -> dict:
        """Combination i as result JSON: each bar parameter as its label and `{name}_bars`."""
        out: dict[str, Any] = {}
        for p in self.strategy.params:
            if p.bars:
                out[p.name], out[f"{p.name}_bars"] = self.labels[i][p.name], int(self.combos[i][p.name])
            else:
                out[p.name] = self.combos[i][p.name]
        return out


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """`["fast=1d:10d:1d", "slow=20d"]` -> {"fast": "1d:10d:1d", "slow": "20d"} (each key once)."""
    spec: dict[str, str] = {}
    for item in items:
        key, sep, values = str(item).partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise InputError(f"invalid --param {item!r}: use KEY=VALUES, e.g. fast=1d:10d:1d")
        if key in spec:
            raise InputError(f"--param {key} is given twice")
        spec[key] = values.strip()
    return spec


def make_grid(strategy_: Strategy, spec: dict[str, Any]) -> Grid:
    """Every combination of the given values (defaults for the rest), minus the rejected ones."""
    for key in spec:
        strategy_.param(key)  # unknown keys fail here
    values = {
        p.name: p.parse_values(spec[p.name]) if p.name in spec else [(str(p.default), p.parse(p.default))]
        for p in strategy_.params
    }
    total = math.prod(len(v) for v in values.values())
    if total > MAX_COMBINATIONS:
        raise InputError(f"the grid of {strategy_.name} has {total:,} combinations: at most {MAX_COMBINATIONS:,}")
    combos, labels, skipped, reasons = [], [], 0, []
    for chosen in itertools.product(*values.values()):
        combo = {name: value for name, (_, value) in zip(values, chosen, strict=True)}
        reason = strategy_.reject(combo)
        if reason:
            skipped += 1
            reasons.append(reason)
            continue
        combos.append(combo)
        labels.append({name: label for name, (label, _) in zip(values, chosen, strict=True)})
    if not combos:
        raise InputError(f"no valid combination of {strategy_.name}'s parameters: {reasons[0]}")
    return Grid(strategy_, values, combos, labels, skipped, {k: str(v) for k, v in spec.items()})


def describe_all() -> list[dict]:
    """Every registered strategy with its parameters, as plain JSON."""
    return [
        {
            "name": name,
            "description": get(name).description,
            "seeded": get(name).seeded,
            "params": [p.describe() for p in get(name).params],
        }
        for name in names()
    ]


def grid_of(name: str, spec: dict[str, Any] | None = None) -> Grid:
    """The grid of the registered strategy `name` for {param: values} (defaults for the rest)."""
    return make_grid(get(name), spec or {})
