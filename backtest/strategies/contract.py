"""The strategy contract: what a strategy is, its parameters, and one function as a strategy.

A strategy turns one pair's candles into a long/flat signal per bar: `signal_t` is decided at
bar t's close, from candles 0..t only (`backtest.strategies.lookahead` checks it).
Execution is the engine's, the same for every strategy: position `p_t = signal_{t-1}`, fills at
the next open, fee per side (see `backtest.simulation.engine`).

A strategy declares:

- `params`: each parameter's name, type (int or float), default and bounds; a `bars` parameter
  is a number of hourly bars and also accepts durations (`12h`, `15d`, `2w`);
- `warmup_bars(params)`: how many candles before the window it reads (a fixed-lookback
  strategy: its lookback; one with a seed or a state: 5x its longest lookback, see
  `SEEDED_WARMUP_FACTOR`);
- `signals(candles, combos)`: the signals of several parameter combinations at once, a k x n
  bool array (the engine calls it in blocks, so memory stays bounded for any grid);
- optionally `reject(params)`: why a combination is invalid (e.g. `fast >= slow`); a grid skips
  and counts those.

Two ways to write one: subclass `Strategy` (vectorised over combinations) or decorate a function
of one combination with `@strategy(...)` (`backtest.strategies.registry`, which also registers
classes). Strategy authors import all of it from `backtest.strategy`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import numpy as np

from backtest.data.candles import Candles
from backtest.errors import DataError, InputError
from backtest.params import parse_bars, parse_value_list, window_label

SEEDED_WARMUP_FACTOR = 5  # seeded or stateful strategies read 5x their longest lookback first
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
