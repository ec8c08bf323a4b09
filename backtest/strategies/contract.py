"""The strategy contract: what a strategy is, its parameters, and one function as a strategy.

A strategy turns one pair's candles into a target per bar: `target_t` in {-1, 0, +1} (short,
flat, long) is decided at bar t's close, from candles 0..t only (`backtest.strategies.lookahead`
checks it). Execution is the engine's, the same for every strategy: the position desired over
bar t is `target_{t-1}`, filled at bar t's open, a fee per side; a run's `--direction` keeps the
long side (`max(target, 0)`, the default), the short side or both (see
`backtest.simulation.engine`).

A strategy declares:

- `params`: each parameter's name, type (int or float), default and bounds; a `bars` parameter
  is a number of hourly bars and also accepts durations (`12h`, `15d`, `2w`);
- `warmup_bars(params)`: how many candles before the window it reads (a fixed-lookback
  strategy: its lookback; one with a seed or a state: 5x its longest lookback, see
  `SEEDED_WARMUP_FACTOR`);
- `sides`: `("long",)` (the default, `LONG_ONLY`) or `("long", "short")` (`LONG_SHORT`);
- `signals(candles, combos)`: the signals of several parameter combinations at once, a k x n
  array (the engine calls it in blocks, so memory stays bounded for any grid): `bool` (True =
  +1, long; False = 0) from any strategy, or `int8` targets exactly in {-1, 0, 1} from one that
  declares the short side (`backtest.strategies.targets` says what is refused);
- optionally `reject(params)`: why a combination is invalid (e.g. `fast >= slow`); a grid skips
  and counts those.

Two ways to write one: subclass `Strategy` (vectorised over combinations) or decorate a function
of one combination with `@strategy(...)` (`backtest.strategies.registry`, which also registers
classes). Strategy authors import all of it from `backtest.strategy`.

A strategy cannot make a result silently wrong: every call of its own code (`signals` through
`checked_signals`, `warmup_bars`, `lookback`, `reject`) runs with its `print()` sent to stderr
(stdout is the job's JSON) and on read-only views of the candles; whatever it raises or exits
with, signals that are not exactly bool (or, with a short side, int8 in {-1, 0, 1}) of the
expected shape (`targets.signal_fault`: never a cast), a `sides` that is neither declaration, a
write to its candles, and a warm-up or lookback that is not a whole number of bars >= 0 are a
`StrategyError`: exit 5, one line naming the strategy, its file and what it did. (A built-in
strategy is our code: an exception it raises is a bug, exit 1 with its traceback.)
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import numpy as np

from backtest.data.candles import VALUE_COLUMNS, Candles
from backtest.errors import InputError, StrategyError
from backtest.params import duration_hours, parse_bars, parse_number, parse_value_list, window_label
from backtest.strategies.targets import LONG_ONLY, LONG_SHORT, describe_output, parse_sides, signal_fault

SEEDED_WARMUP_FACTOR = 5  # seeded or stateful strategies read 5x their longest lookback first
Combo = dict[str, Any]  # one parameter combination: name -> value (bars as an int count)
_PACKAGE = Path(__file__).resolve().parents[1]  # backtest/: where the built-in strategies live


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
            hours = duration_hours(text)
            if hours is not None and hours < 1 and self.low is not None:  # 0d or -1d: say the bounds
                raise InputError(f"invalid {self.name} {text!r}: must be {self.bounds_text()}")
            value: int | float = parse_bars(text, self.name)
        else:
            number = parse_number(text, self.kind)  # written plainly: not 1_0, nor 1e3 for a whole number
            if number is None:
                raise InputError(f"invalid {self.name} {text!r}: must be {self._kind_text()}")
            value = number
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
        return (
            "a whole number, in digits (e.g. 10)" if self.kind is int else "a number, in digits (e.g. 2, 0.5 or 1e-3)"
        )

    def _parse_step(self, text: str) -> int | float:
        step = parse_number(text, self.kind)
        if step is None:
            raise InputError(f"invalid {self.name} step {text!r}: must be {self._kind_text()}")
        if not step > 0:
            raise InputError(f"invalid {self.name} step {text!r}: must be positive")
        return step

    def describe(self) -> dict:
        """The parameter as plain JSON (for the trigger form and `list-strategies`): `low` and `high`
        are its inclusive bounds (in bars for a `bars` parameter; null: none), `help` its text."""
        return {
            "name": self.name,
            "type": self.kind.__name__,
            "bars": self.bars,
            "default": self.default,
            "low": self.low,
            "high": self.high,
            "help": self.help,
        }


class Strategy:
    """Base class of every strategy; see the module docstring for the contract."""

    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    description: ClassVar[str] = ""
    # A seed or a state: the signal depends on where the candles read begin (so the warm-up
    # check allows a small share of changed bars, `lookahead.SEEDED_TOLERANCE`).
    seeded: ClassVar[bool] = False
    # The sides its targets take: LONG_ONLY (bool signals) or LONG_SHORT (bool, or int8 in {-1, 0, 1}).
    sides: ClassVar[tuple[str, ...]] = LONG_ONLY

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Each subclass's own `warmup_bars`, `lookback` and `reject` run as strategy code, and a
        warm-up or lookback is checked to be a whole number of bars >= 0 (see the module docstring)."""
        super().__init_subclass__(**kwargs)
        for name in ("warmup_bars", "lookback"):
            if name in vars(cls):
                setattr(cls, name, _checked_bars(vars(cls)[name], name))
        if "reject" in vars(cls):
            cls.reject = _as_strategy_code(vars(cls)["reject"], "reject")

    def warmup_bars(self, params: Combo) -> int:
        raise NotImplementedError

    def lookback(self, params: Combo) -> int:
        """Candles before the first bar whose signal is defined (a run needs lookback + 1 candles)."""
        return self.warmup_bars(params)

    def signals(self, candles: Candles, combos: Sequence[Combo]) -> np.ndarray:
        """A (len(combos), len(candles)) array: target_t of each combination, bool (True = long)
        or, from a strategy with a short side, int8 in {-1, 0, 1}."""
        raise NotImplementedError

    def checked_signals(self, candles: Candles, combos: Sequence[Combo]) -> np.ndarray:
        """`signals` as strategy code, on read-only views of the candles: the one way the job and
        the look-ahead check call a strategy. Exactly one row per combination and candle, bool or
        (a short side declared) int8 in {-1, 0, 1}, returned as given; else a StrategyError (exit 5)."""
        shape = (len(combos), len(candles))
        sides = declared_sides(self)
        with StrategyCode(self, "signals"):
            output = self.signals(read_only(candles), combos)
        signals, fault = signal_fault(output, shape, sides, "combination and candle")
        if signals is None:
            raise StrategyError(f"{self.title} returned {describe_output(output)} from signals{fault}")
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

    @property
    def made_from(self) -> Callable | type:
        """The class (or, for a function strategy, the function) the strategy's code is."""
        return type(self)

    @property
    def source_file(self) -> str | None:
        """The file of the strategy's code, None when it is unknown."""
        try:
            return inspect.getfile(self.made_from)
        except (TypeError, OSError):
            return None

    @property
    def builtin(self) -> bool:
        """One of ours (the package's own code): what it raises is a bug, not the strategy's fault."""
        file = self.source_file
        return file is not None and Path(file).resolve().is_relative_to(_PACKAGE)

    @property
    def title(self) -> str:
        """`strategy NAME`, and its file for a user's strategy: how every message names it."""
        name = getattr(self, "name", type(self).__name__)
        return (
            f"strategy {name}" if self.builtin or self.source_file is None else f"strategy {name} ({self.source_file})"
        )


def read_only(candles: Candles) -> Candles:
    """Read-only views of the candles' arrays (no copy): a strategy's write raises instead of
    changing the prices the engine computes equity and buy-and-hold on."""
    views = []
    for name in ("open_time", *VALUE_COLUMNS):
        view = getattr(candles, name).view()
        view.flags.writeable = False
        views.append(view)
    return Candles(*views)


def declared_sides(strategy: Strategy) -> tuple[str, ...]:
    """The strategy's `sides` as LONG_ONLY or LONG_SHORT (a list or another order is accepted);
    anything else is its fault (exit 5)."""
    sides = parse_sides(strategy.sides)
    if sides is None:
        raise StrategyError(
            f"{strategy.title} declares sides = {strategy.sides!r}: it must be {LONG_ONLY!r} (long or flat, "
            f"the default) or {LONG_SHORT!r}"
        )
    return sides


class StrategyCode:
    """`with StrategyCode(strategy, "signals"):` around a call of a strategy's own code: its
    stdout goes to stderr; whatever it raises (any exception) or exits with is a StrategyError
    naming it, its file and line, and what it did (a built-in's exception stays a bug: re-raised).

    A class, not a generator context manager: it wraps every warm-up call, so it is kept cheap."""

    __slots__ = ("stdout", "strategy", "what")

    def __init__(self, strategy: Strategy, what: str):
        self.strategy, self.what = strategy, what

    def __enter__(self) -> None:
        self.stdout, sys.stdout = sys.stdout, sys.stderr

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        sys.stdout = self.stdout
        if exc is None or isinstance(exc, StrategyError) or not isinstance(exc, Exception | SystemExit):
            return False  # none, already named, or KeyboardInterrupt and the like: as they are
        if self.strategy.builtin:
            return False  # our own code's bug: exit 1 with its traceback
        did, detail = fault_text(exc)
        where = _line_in(tb, self.strategy.source_file)
        raise StrategyError(f"{self.strategy.title} {did} in {self.what}{where}{detail}") from None


def fault_text(exc: BaseException) -> tuple[str, str]:
    """What a strategy's code did, and its message as `: ...` (one line): ("raised
    ZeroDivisionError", ": division by zero")."""
    try:
        message = " ".join(str(exc).split())
    except Exception:  # a user's exception whose __str__ itself raises
        message = "(its message could not be read)"
    if isinstance(exc, SystemExit):
        return f"exited (sys.exit({exc.code!r}))", ""
    if isinstance(exc, ValueError) and "read-only" in message:
        return "wrote to its candles", f": they are read-only ({message})"
    return f"raised {type(exc).__name__}", f": {message}" if message else ""


def _line_in(tb: TracebackType | None, file: str | None) -> str:
    """` at line N`: the deepest frame of the traceback in the strategy's file ('' if none)."""
    line = None
    while tb is not None:
        if file is not None and tb.tb_frame.f_code.co_filename == file:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" at line {line}" if line is not None else ""


_BARS_TEXT = {"warmup_bars": "warm-up", "lookback": "lookback"}


def combo_text(params: Combo) -> str:
    """`fast=24 slow=120`: a combination in a message."""
    return " ".join(f"{k}={v}" for k, v in params.items()) or "no parameters"


def _as_strategy_code(method: Callable, what: str) -> Callable:
    @functools.wraps(method)
    def run(self: Strategy, *args: Any) -> Any:
        with StrategyCode(self, what):
            return method(self, *args)

    return run


def _checked_bars(method: Callable[[Strategy, Combo], int], what: str) -> Callable[[Strategy, Combo], int]:
    """`warmup_bars` or `lookback` as strategy code whose value must be a whole number of bars >= 0."""

    @functools.wraps(method)
    def checked(self: Strategy, params: Combo) -> int:
        with StrategyCode(self, what):
            value = method(self, params)
        if isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 0:
            return int(value)
        shown = repr(value) if isinstance(value, str) else str(value)
        raise StrategyError(
            f"{self.title} declared a {_BARS_TEXT[what]} of {shown} ({type(value).__name__}) for "
            f"{combo_text(params)}: it must be a whole number of bars, 0 or more"
        )

    return checked


class FunctionStrategy(Strategy):
    """A strategy from a function of one combination: `signal(candles, **params) -> one target per
    candle` (bool, or int8 in {-1, 0, 1} with `sides=LONG_SHORT`)."""

    def __init__(
        self,
        name: str,
        fn: Callable[..., np.ndarray],
        params: Sequence[Param],
        warmup: Callable[[Combo], int],
        sides: Sequence[str] = LONG_ONLY,
    ):
        self.name, self.params, self._fn, self._warmup = name, tuple(params), fn, warmup
        self.sides = sides  # checked when registered (`declared_sides`)
        self.description = (fn.__doc__ or "").strip().split("\n")[0]

    @property
    def made_from(self) -> Callable:
        return self._fn

    def warmup_bars(self, params: Combo) -> int:
        return self._warmup(params)  # checked as every strategy's warm-up (Strategy.__init_subclass__)

    def signals(self, candles: Candles, combos: Sequence[Combo]) -> np.ndarray:
        """The function's signal of each combination: each exactly one bool (or, with a short side,
        int8 target) per candle. Bool rows stay bool; one int8 row makes the block int8 (True = 1)."""
        sides = declared_sides(self)
        rows = []
        for combo in combos:
            output = self._fn(candles, **combo)
            row, fault = signal_fault(output, (len(candles),), sides, "candle")
            if row is None:
                raise StrategyError(f"{self.title} returned {describe_output(output)} for {combo_text(combo)}{fault}")
            rows.append(row)
        return np.stack(rows) if rows else np.zeros((0, len(candles)), dtype=bool)
