"""How a run trades: side(s), stops, take-profit, trailing stop, size, slippage and borrow cost.

`Execution` is one combination of those settings (what `backtest.simulation.engine` simulates);
`ExecutionGrid` is a run's set of them: `--sl`, `--tp` and `--trail` each take one value, a list
or a range (and join the strategy's parameter grid), the others one value per run. The job's
command line and the DAG's `plan` both parse through `parse_execution`, so what `plan` accepts
the job accepts. Fractions are written `0.05` or `5%`.

Bounds: `sl` and `trail` in (0, 1); `tp` > 0 (at most 100, i.e. +10,000 %); `size` in (0, 1];
`slippage_bps` and `borrow_bps_per_day` from 0 to below 1,000.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from backtest.errors import InputError
from backtest.params import parse_number, parse_value_list
from backtest.strategies.grid import Grid

DIRECTIONS = ("long", "short", "long_short")
STOP_OPTIONS = ("sl", "tp", "trail")  # the settings that join the grid
EXIT_KINDS = ("signal", "stop", "take_profit", "ruin")  # a trailing stop's exit is a `stop`
SIDE_NAMES = {1: "long", 0: "flat", -1: "short"}
MAX_BPS = 1_000.0  # slippage and borrow: below this
MAX_TP = 100.0
MAX_STOP_VALUES = 100  # values of one of --sl/--tp/--trail


@dataclass(frozen=True)
class Execution:
    """One way of trading a strategy's targets. None for a stop: not used."""

    direction: str = "long"
    sl: float | None = None
    tp: float | None = None
    trail: float | None = None
    size: float = 1.0
    slippage_bps: float = 0.0
    borrow_bps_per_day: float = 0.0

    @property
    def slippage(self) -> float:
        """k: the adverse fraction of a fill price."""
        return self.slippage_bps / 10_000

    @property
    def borrow_per_hour(self) -> float:
        """r: a short's debt grows by 1 + r each hour."""
        return self.borrow_bps_per_day / 10_000 / 24

    @property
    def classic(self) -> bool:
        """Long/flat at size 1, no stops, no slippage: today's engine, bit for bit (borrow only
        matters to a short)."""
        return (
            self.direction == "long"
            and self.sl is None
            and self.tp is None
            and self.trail is None
            and self.size == 1.0
            and self.slippage_bps == 0.0
        )

    def describe(self) -> dict:
        """The result JSON's `execution` object."""
        return {
            "direction": self.direction,
            "sl": self.sl,
            "tp": self.tp,
            "trail": self.trail,
            "size": self.size,
            "slippage_bps": self.slippage_bps,
            "borrow_bps_per_day": self.borrow_bps_per_day,
        }


@dataclass(frozen=True)
class ExecutionGrid:
    """A run's executions: one per combination of the `sl`, `tp` and `trail` values, in product
    order (sl outermost), sharing direction, size, slippage and borrow."""

    direction: str = "long"
    sl: tuple[float | None, ...] = (None,)
    tp: tuple[float | None, ...] = (None,)
    trail: tuple[float | None, ...] = (None,)
    size: float = 1.0
    slippage_bps: float = 0.0
    borrow_bps_per_day: float = 0.0
    spec: tuple[tuple[str, str], ...] = ()  # the stop options as the user wrote them

    @property
    def executions(self) -> list[Execution]:
        return [
            Execution(self.direction, sl, tp, trail, self.size, self.slippage_bps, self.borrow_bps_per_day)
            for sl, tp, trail in itertools.product(self.sl, self.tp, self.trail)
        ]

    @property
    def is_grid(self) -> bool:
        return len(self.sl) * len(self.tp) * len(self.trail) > 1

    @property
    def wants_short(self) -> bool:
        return self.direction != "long"


@dataclass(frozen=True)
class Combinations:
    """A run's combinations: each of the strategy's parameter combinations traded by each of the
    executions (`--sl`, `--tp`, `--trail` values), execution fastest: combination i is the
    strategy's combination i // E with execution i % E."""

    grid: Grid
    executions: list[Execution]

    def __len__(self) -> int:
        return len(self.grid.combos) * len(self.executions)

    def execution(self, i: int) -> Execution:
        return self.executions[i % len(self.executions)]

    def params_json(self, i: int) -> dict:
        return self.grid.params_json(i // len(self.executions))


def parse_fraction(text: str | int | float, what: str) -> float:
    """`0.05` or `5%` as the fraction 0.05 (written plainly, see `params.parse_number`)."""
    raw = text.strip() if isinstance(text, str) else text
    percent = isinstance(raw, str) and raw.endswith("%")
    number = parse_number(raw[:-1] if percent else raw)
    if number is None or not math.isfinite(number):
        raise InputError(f"invalid {what} {text!r}: must be a fraction (0.05) or a percent (5%)")
    if percent:  # 5% is exactly the fraction 0.05 (not 5 / 100 in floats: 0.07 vs 0.07000000000000001)
        try:
            number = float(Decimal(raw[:-1].strip()) / 100)
        except InvalidOperation:  # pragma: no cover - parse_number accepted it
            raise InputError(f"invalid {what} {text!r}: must be a fraction (0.05) or a percent (5%)") from None
    return float(number)


def _fraction_step(text: str, what: str) -> float:
    step = parse_fraction(text, f"{what} step")
    if not step > 0:
        raise InputError(f"invalid {what} step {text!r}: must be positive")
    return step


def _check_stop(value: float, what: str, text: str) -> float:
    if what in ("sl", "trail") and not 0 < value < 1:
        raise InputError(f"invalid --{what} {text!r}: must be above 0 and below 1 (e.g. 0.05 or 5%)")
    if what == "tp" and not 0 < value <= MAX_TP:
        raise InputError(f"invalid --tp {text!r}: must be above 0 (e.g. 0.1 or 10%), at most {MAX_TP:g}")
    return value


def parse_stop_values(text: str | int | float | None, what: str) -> tuple[float | None, ...]:
    """`--sl`, `--tp` or `--trail`: one value, a list (`0.03,0.06`) or a range (`1%:5%:1%`);
    (None,) when not given."""
    if text is None:
        return (None,)
    values = parse_value_list(
        text,
        lambda item: _check_stop(parse_fraction(item, f"--{what}"), what, item),
        lambda item: _fraction_step(item, f"--{what}"),
        lambda value: f"{value:g}",
    )
    if len(values) > MAX_STOP_VALUES:
        raise InputError(f"invalid --{what} {text!r}: at most {MAX_STOP_VALUES} values, got {len(values)}")
    return tuple(round(value, 12) for _, value in values)  # a range's 0.03 + 2 * 0.03 is 0.09, not 0.09000000000000001


def parse_bps(text: str | int | float | None, what: str) -> float:
    """`--slippage-bps` or `--borrow-bps-per-day`: a number of basis points from 0 to below 1,000."""
    if text is None:
        return 0.0
    value = parse_number(text) if isinstance(text, str | int | float) else None
    if value is None or not math.isfinite(value):
        raise InputError(f"invalid --{what} {text!r}: must be a number of basis points (e.g. 5)")
    if not 0 <= value < MAX_BPS:
        raise InputError(f"invalid --{what} {text!r}: must be from 0 to below {MAX_BPS:g} basis points")
    return float(value)


def parse_size(text: str | int | float | None) -> float:
    """`--size`: the share of equity a trade uses, in (0, 1] (`0.5` or `50%`)."""
    if text is None:
        return 1.0
    value = parse_fraction(text, "--size")
    if not 0 < value <= 1:
        raise InputError(f"invalid --size {text!r}: must be above 0 and at most 1 (e.g. 0.5 or 50%)")
    return value


def parse_direction(text: str | None) -> str:
    if text is None:
        return "long"
    if text not in DIRECTIONS:
        raise InputError(f"invalid --direction {text!r}: one of {', '.join(DIRECTIONS)}")
    return text


def parse_execution(
    direction: str | None = None,
    sl: str | None = None,
    tp: str | None = None,
    trail: str | None = None,
    size: str | None = None,
    slippage_bps: str | None = None,
    borrow_bps_per_day: str | None = None,
) -> ExecutionGrid:
    """The run's executions from the options as written (None: not given)."""
    spec = tuple((name, str(value)) for name, value in (("sl", sl), ("tp", tp), ("trail", trail)) if value is not None)
    return ExecutionGrid(
        direction=parse_direction(direction),
        sl=parse_stop_values(sl, "sl"),
        tp=parse_stop_values(tp, "tp"),
        trail=parse_stop_values(trail, "trail"),
        size=parse_size(size),
        slippage_bps=parse_bps(slippage_bps, "slippage-bps"),
        borrow_bps_per_day=parse_bps(borrow_bps_per_day, "borrow-bps-per-day"),
        spec=spec,
    )


def check_sides(grid: ExecutionGrid, strategy_title: str, sides: tuple[str, ...]) -> None:
    """Asking for a short side from a strategy without one is an input error naming it."""
    if grid.wants_short and "short" not in sides:
        raise InputError(
            f"--direction {grid.direction} needs a short side: {strategy_title} is long-only "
            f"(its sides: {', '.join(sides)})"
        )
