"""Parsing and validation of user input: symbols, windows, fees and times.

Everything that ends up on a command line or in a storage key passes through here first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import TypeVar

from backtest.errors import InputError

SYMBOL_PATTERN = r"^[A-Z0-9]{2,20}$"
_SYMBOL_RE = re.compile(SYMBOL_PATTERN)
_WINDOW_RE = re.compile(r"^(-?[0-9]{1,15})([hdw]?)$")  # a sign, to say "must be positive" rather than "not a duration"
# Numbers as a user writes them (`parse_number`): ASCII digits with an optional sign; a float also
# with a decimal point and an exponent, or inf/nan (refused as not finite by the callers).
_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE)
_HOURS_PER_UNIT = {"": 1, "h": 1, "d": 24, "w": 168}

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # every time the job and the DAG print or store: UTC, whole seconds
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_WINDOW_BARS = 2
MAX_WINDOW_BARS = 100_000
MAX_FEE_BPS = 1_000.0
MAX_RANGE_VALUES = 100_000
T = TypeVar("T", int, float)


def validate_symbol(symbol: str) -> str:
    """Return the symbol if it matches `^[A-Z0-9]{2,20}$`, else raise InputError."""
    if not isinstance(symbol, str) or not _SYMBOL_RE.fullmatch(symbol):
        raise InputError(f"invalid symbol {symbol!r}: must match {SYMBOL_PATTERN} (e.g. BTCUSDT)")
    return symbol


def parse_number(text: str | int | float, kind: type = float) -> int | float | None:
    """`text` as a number of `kind` (int or float) when it is written plainly, else None.

    Plainly: ASCII digits with an optional sign (`10`, `-3`), and for a float also a decimal point
    and an exponent (`0.5`, `1e-3`; `inf` and `nan` too, for the caller to refuse as not finite).
    Python's own `int()` and `float()` accept more that a user does not mean as that number:
    `1_0` (10), non-ASCII digits (Arabic, full-width), and `1e3` is no whole number. A bool is no number.
    """
    if isinstance(text, bool):
        return None
    try:
        if isinstance(text, int | float) and not (kind is int and isinstance(text, float)):
            return kind(text)
        text = str(text).strip()
        return kind(text) if (_INT_RE if kind is int else _FLOAT_RE).fullmatch(text) else None
    except (OverflowError, ValueError):  # an int of more than 4,300 digits, or beyond a float
        return None


def parse_whole(text: str | int, what: str) -> int:
    """A whole-number option such as `--holdout-days`, written plainly (`parse_number`)."""
    value = parse_number(text, int)
    if value is None:
        raise InputError(f"invalid {what} {text!r}: must be a whole number (e.g. 30)")
    return int(value)


def duration_hours(text: str | int) -> int | None:
    """The hourly bars `360` (bars), `12h`, `15d` or `2w` stand for (0 for `0`, negative for `-1d`),
    or None for other text."""
    match = _WINDOW_RE.fullmatch(str(text).strip().lower())
    return int(match.group(1)) * _HOURS_PER_UNIT[match.group(2)] if match else None


def parse_bars(text: str | int, what: str = "bar count") -> int:
    """A number of hourly bars: `360` (bars), `12h`, `15d` or `2w`; at least 1. `what` names it in the error."""
    bars = duration_hours(text)
    if bars is None:
        raise InputError(f"invalid {what} {text!r}: use bars (360) or a duration (12h, 15d, 2w)")
    if bars < 1:
        raise InputError(f"invalid {what} {text!r}: must be positive, at least 1 bar (1h)")
    return bars


def parse_window(text: str | int) -> int:
    """Window length in hourly bars: `360` (bars), `12h`, `15d` or `2w`."""
    bars = duration_hours(text)
    if bars is None:
        raise InputError(f"invalid window {text!r}: use bars (360) or a duration (12h, 15d, 2w)")
    if not MIN_WINDOW_BARS <= bars <= MAX_WINDOW_BARS:
        raise InputError(f"invalid window {text!r}: must be {MIN_WINDOW_BARS} to {MAX_WINDOW_BARS} hourly bars")
    return bars


MAX_WINDOWS = 500


def window_label(bars: int) -> str:
    """The shortest spelling of a window: `15d` for 360 bars, `36h` for 36."""
    return f"{bars // 24}d" if bars % 24 == 0 else f"{bars}h"


def parse_value_list(
    text: str | int | float, parse_one: Callable[[str], T], parse_step: Callable[[str], T], label: Callable[[T], str]
) -> list[tuple[str, T]]:
    """One value, a comma list (`5d,10d,15d`) or a range `start:stop:step` (both ends included).

    Returns (label, value) pairs in the order given, without duplicates: a listed value keeps
    the spelling it was given, a range's values are spelled by `label`.
    """
    text = str(text).strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise InputError(f"invalid range {text!r}: use start:stop:step, e.g. 1d:60d:1d")
        start, stop, step = parse_one(parts[0]), parse_one(parts[1]), parse_step(parts[2])
        if stop < start:
            raise InputError(f"invalid range {text!r}: the stop is before the start")
        count = int((Decimal(str(stop)) - Decimal(str(start))) / Decimal(str(step))) + 1
        if count > MAX_RANGE_VALUES:
            raise InputError(f"invalid range {text!r}: more than {MAX_RANGE_VALUES} values")
        kind = type(start)
        values = [kind(Decimal(str(start)) + i * Decimal(str(step))) for i in range(count)]
        pairs = [(label(value), value) for value in values]
    else:
        pairs = [(item.strip(), parse_one(item)) for item in text.split(",")]
    unique: dict = {}
    for item_label, value in pairs:
        unique.setdefault(value, item_label)
    return [(item_label, value) for value, item_label in unique.items()]


def parse_windows(text: str | int) -> list[tuple[str, int]]:
    """One window, a list (`5d,10d,15d`) or a range (`1d:60d:1d`, both ends included).

    Returns (label, bars) pairs in the order given, without duplicates.
    """
    windows = parse_value_list(text, parse_window, partial(parse_bars, what="window step"), window_label)
    if len(windows) > MAX_WINDOWS:
        raise InputError(f"invalid window list {text!r}: at most {MAX_WINDOWS} windows, got {len(windows)}")
    return windows


def parse_fee_bps(value: str | float) -> float:
    """Fee per side in basis points: a finite number from 0 to 1,000, written plainly (`parse_number`)."""
    fee = parse_number(value) if isinstance(value, str | int | float) else None
    if fee is None:
        raise InputError(f"invalid fee {value!r}: must be a number of basis points (e.g. 10)")
    if not math.isfinite(fee) or not 0 <= fee <= MAX_FEE_BPS:
        raise InputError(f"invalid fee {value!r}: must be from 0 to {MAX_FEE_BPS:g} basis points")
    return fee


def parse_time_ms(text: str, what: str = "time") -> int:
    """ISO-8601 date or date-time to epoch milliseconds; a time without zone is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except (AttributeError, ValueError):
        raise InputError(f"invalid {what} {text!r}: use ISO 8601, e.g. 2024-01-31 or 2024-01-31T00:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def format_time(moment: datetime) -> str:
    """A moment as `YYYY-MM-DDTHH:MM:SSZ` (in UTC)."""
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def format_time_ms(ms: int) -> str:
    """Epoch milliseconds to `YYYY-MM-DDTHH:MM:SSZ`."""
    return format_time(datetime.fromtimestamp(ms / 1000, tz=UTC))


def floor_hour_ms(ms: int) -> int:
    return ms - ms % HOUR_MS
