"""What a strategy's signals may be: targets per bar, the sides a strategy declares, and the check
of what it returned (`signal_fault`), with the one-line text that names what is wrong.

A signal per bar is a target in {-1, 0, +1} (short, flat, long), decided at the bar's close:

- `bool`, from any strategy: True = +1 (long), False = 0 (flat);
- `int8` with values exactly in {-1, 0, 1}, from a strategy that declares a short side
  (`sides = ("long", "short")`, `LONG_SHORT`).

Anything else is refused, never cast: floats (even 0.0 and 1.0), NaN, other integer dtypes
(int64, uint8, ...), int8 values outside {-1, 0, 1}, int8 from a long-only strategy, strings,
objects, None, a wrong shape. The array is returned as given (bool or int8): the engine turns it
into targets (`astype(np.int8)`); a long-only run keeps max(target, 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LONG, SHORT = "long", "short"
LONG_ONLY = (LONG,)  # the default: bool signals, long or flat
LONG_SHORT = (LONG, SHORT)  # bool or int8 targets in {-1, 0, 1}
SIDES = (LONG_ONLY, LONG_SHORT)  # every declaration a strategy may make
TARGETS = (-1, 0, 1)
TARGET_DTYPE = np.dtype(np.int8)
SIGNAL_DTYPES = (np.dtype(bool), TARGET_DTYPE)  # int8 only from a strategy with a short side
INT8_HINT = 'declare sides = ("long", "short") to return int8 targets'


def parse_sides(value: object) -> tuple[str, ...] | None:
    """A `sides` declaration as one of SIDES (a list or another order of the same names is
    accepted), or None when it is none of them."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        return None
    names = list(value)
    for sides in SIDES:
        if len(names) == len(sides) and set(names) == set(sides):
            return sides
    return None


def expected_text(shape: tuple[int, ...], sides: tuple[str, ...], per: str) -> str:
    """`expected a bool array of shape (1, 960), one signal per combination and candle` (and the
    int8 targets a strategy with a short side may return)."""
    kinds = "a bool array" if SHORT not in sides else "a bool array or an int8 array of targets -1, 0, 1"
    return f"expected {kinds} of shape {shape}, one signal per {per}"


def signal_fault(
    output: object, shape: tuple[int, ...], sides: tuple[str, ...], per: str
) -> tuple[np.ndarray | None, str]:
    """(the signals, "") when `output` is valid signals of `shape` for a strategy with `sides`;
    else (None, what is wrong), the end of the message `STRATEGY returned WHAT [for PARAMS]...`:
    `: expected ...` or ` with a target of 2 at bar 17: ...`. `per` says what one signal is for
    (`candle`, `combination and candle`)."""
    values = None
    if output is not None:
        try:
            values = np.asarray(output)
        except Exception:  # an array-like that is none (ragged lists, an __array__ that raises)
            values = None
    if values is None or values.dtype not in SIGNAL_DTYPES or values.shape != shape:
        return None, f": {expected_text(shape, sides, per)}"
    if values.dtype == TARGET_DTYPE:
        if SHORT not in sides:
            return None, f": {expected_text(shape, sides, per)} (it is long-only; {INT8_HINT})"
        if values.size and (values.min() < -1 or values.max() > 1):
            flat = values.reshape(-1)
            bad = int(np.flatnonzero((flat < -1) | (flat > 1))[0])
            where = np.unravel_index(bad, shape)
            at = f"bar {where[-1]}" if len(shape) == 1 else f"combination {where[0]}, bar {where[1]}"
            return None, f" with a target of {int(flat[bad])} at {at}: targets must be -1, 0 or 1"
    return values, ""


def valid_signals(output: object, shape: tuple[int, ...], sides: tuple[str, ...] = LONG_ONLY) -> np.ndarray | None:
    """What a strategy returned as a signal array, when it is one (`signal_fault`); else None."""
    return signal_fault(output, shape, sides, "candle")[0]


def describe_output(output: object) -> str:
    """What a strategy returned, for its error message: its type, dtype and shape."""
    if output is None:
        return "None"
    if isinstance(output, np.ndarray):
        return f"{_a(str(output.dtype))} array of shape {output.shape}"
    try:
        values = np.asarray(output)
    except Exception:
        return f"{_a(type(output).__name__)} that is no array"
    return f"{_a(type(output).__name__)} ({values.dtype} values, shape {values.shape})"


def _a(word: str) -> str:
    return f"{'an' if word[:1] in tuple('aeio') else 'a'} {word}"  # an int64, a uint8
