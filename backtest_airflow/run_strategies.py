"""A run's `strategies` param checked, by `backtest.strategy`'s own rules: each strategy's name and
parameter values (a grid when some have several), the `window` param as sma_trend's window, and
the quick look-ahead check `plan` runs on every strategy of the run. No Airflow import.

Every strategy parameter rule (names, bounds, durations, ranges, rejected combinations, grid
size) is `backtest.strategy`'s: `check_strategies` asks it and collects every problem, so that
`planning.make_plan` reports them all in one message (and the job accepts what it lets through).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from backtest import strategy
from backtest.errors import InputError
from backtest.simulation.execution import check_sides, parse_execution
from backtest.strategies.builtins import SmaTrend
from backtest.strategies.contract import declared_sides

WINDOW_STRATEGY = SmaTrend.name  # the strategy whose `window` the `window` param is (the default strategy)
DEFAULT_WINDOW = SmaTrend().param("window").default  # the `window` param's default: sma_trend's own
# Sampled cuts of plan's quick look-ahead check (check-strategy: 60), besides the cuts at every change of
# the signal and the bar before it, which catch every peek that creates or moves an entry or exit.
LOOKAHEAD_CUTS = 12
# How an entry of `strategies` may trade (docs/execution.md): the job's options of the same names
EXECUTION_KEYS = ("direction", "sl", "tp", "trail", "size", "borrow_bps_per_day")
ENTRY_KEYS = ("name", "label", "params", *EXECUTION_KEYS)
# An entry's label names its results folder (strategy=<label>) and its leaderboard rows
LABEL_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"


def values_text(value: Any) -> str | None:
    """A parameter's values as the job's command line takes them: `5d`, `5d,10d`, `1d:10d:1d`
    (a JSON number, or a list of values, is accepted too); None when it is none of these."""
    if isinstance(value, list):
        items = [values_text(item) for item in value]
        if not items or None in items or (len(items) > 1 and any("," in i or ":" in i for i in items)):
            return None  # empty, or a list of lists or of ranges: not one comma list
        return ",".join(items)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return str(value).strip()


def check_strategies(
    value: Any, window: str | None, problems: list[str], slippage_bps: float = 0.0
) -> tuple[list[dict], list[strategy.Grid]]:
    """The `strategies` param normalized ([{"name", "label", "params": {param: values text},
    "execution": {option: value text}}]) with each one's grid, both made by `backtest.strategy` and
    `backtest.simulation.execution` (so the job accepts them); problems go to `problems`.

    An entry may say how it trades (EXECUTION_KEYS, as the job's options; the run's `slippage_bps`
    applies to all) and carry a `label` (default: its name): two entries may use one strategy when
    their labels differ, and each label is listed once.

    `window` is the `window` param (`values_text`; None: not valid), sma_trend's window: it fills
    it when `strategies` gives none; when it is not its default, `strategies` giving sma_trend a
    window too, or not listing sma_trend, is a problem (one of them would be silently ignored)."""
    if window is None:
        problems.append("window must be text (15d, 5d,10d or 1d:10d:1d) or a number of bars")
    if value is None:
        value = [{"name": WINDOW_STRATEGY, "params": {}}]
    if not isinstance(value, list) or not value:
        problems.append('strategies must be a non-empty list of {"name": ..., "params": {...}}')
        return [], []
    try:
        registered = strategy.names()
    except InputError as exc:  # a user's strategy module does not import: say which and why
        problems.append(str(exc))
        return [], []
    window_given = window is not None and window != DEFAULT_WINDOW
    normalized, grids, unknown, seen, labels = [], [], [], set(), set()
    for i, item in enumerate(value):
        if not isinstance(item, dict) or "name" not in item or set(item) - set(ENTRY_KEYS):
            problems.append(
                f'strategies[{i}] must be {{"name": ..., "params": {{...}}}} (and optionally '
                f"{', '.join(ENTRY_KEYS[2:])}), not {item!r}"
            )
            continue
        name, given = item["name"], item.get("params") or {}
        if not isinstance(name, str) or name not in registered:
            unknown.append(name)
            continue
        label = item.get("label", name)
        if not isinstance(label, str) or not re.fullmatch(LABEL_PATTERN, label):
            problems.append(f"strategies[{i}] label {label!r}: must match {LABEL_PATTERN} (it names a folder)")
            continue
        if label in labels:
            problems.append(
                f"strategy {label!r} is listed twice"
                + ("" if "label" in item else ": give each entry of one strategy its own label")
            )
            continue
        labels.add(label)
        execution = _execution(strategy.get(name), item, label, slippage_bps, problems)
        if execution is None:
            continue
        if name in seen and name == WINDOW_STRATEGY and window_given:
            problems.append(
                f"window {window!r} is {WINDOW_STRATEGY}'s window: with several entries of it, give each its own"
            )
            continue
        seen.add(name)
        if not isinstance(given, dict):
            problems.append(f"{name} params must be an object {{param: values}}, not {given!r}")
            continue
        spec = _spec(strategy.get(name), given, problems)
        if name == WINDOW_STRATEGY and spec is not None:
            if "window" not in given and window is not None:
                spec = _spec(strategy.get(name), {**spec, "window": window}, problems, "window")
            elif "window" in given and window_given:
                problems.append(
                    f"window {window!r} and the window {given['window']!r} of {name} in strategies are both "
                    "given: give it once, in strategies"
                )
                spec = None
        if spec is None:
            continue
        try:
            grids.append(strategy.make_grid(strategy.get(name), spec))
        except InputError as exc:  # no valid combination, too many combinations
            problems.append(str(exc))
            continue
        normalized.append({"name": name, "label": label, "params": spec, "execution": execution})
    if unknown:
        problems.append(f"unknown strategy(s) {', '.join(map(repr, unknown))}: registered are {', '.join(registered)}")
    if window_given and WINDOW_STRATEGY not in seen:
        problems.append(f"window {window!r} is {WINDOW_STRATEGY}'s window, but strategies does not list it")
    return normalized, grids


def _execution(
    strategy_: strategy.Strategy, item: dict, label: str, slippage_bps: float, problems: list[str]
) -> dict[str, str] | None:
    """An entry's execution options as the job's option texts ({} for the defaults), checked by the
    job's own parser; None (and its problems) when one is invalid."""
    texts: dict[str, str] = {}
    for key in EXECUTION_KEYS:
        if key not in item:
            continue
        text = values_text(item[key]) if key in ("sl", "tp", "trail") else item[key]
        if key != "direction" and (isinstance(text, bool) or not isinstance(text, str | int | float)):
            problems.append(f"{label} {key}: must be a number or text (0.05 or 5%), not {item[key]!r}")
            return None
        texts[key] = str(text)
    try:
        grid = parse_execution(**texts, slippage_bps=str(slippage_bps))
        check_sides(grid, strategy_.title, declared_sides(strategy_))
    except InputError as exc:
        problems.append(f"{label}: {exc}")
        return None
    return texts


def _spec(strategy_: strategy.Strategy, given: dict, problems: list[str], what: str = "") -> dict[str, str] | None:
    """{param: values text} of one strategy, each checked by its `Param`; None if any is a problem.
    `what` names where the values came from in the messages (default: `<strategy> <param>`)."""
    spec: dict[str, str] = {}
    for key, values in given.items():
        try:
            param = strategy_.param(str(key))  # unknown parameter
        except InputError as exc:
            problems.append(str(exc))
            continue
        text = values_text(values)
        try:
            if text is None:
                raise InputError(f"values must be text, a number or a list of them, not {values!r}")
            param.parse_values(text)
        except InputError as exc:
            problems.append(f"{what or f'{strategy_.name} {key}'}: {exc}")
            continue
        spec[param.name] = text
    return spec if len(spec) == len(given) else None


def grid_of(entry: dict) -> strategy.Grid:
    """The grid of one of a plan's strategies (a `RunPlan.strategies` item)."""
    return strategy.grid_of(entry["name"], entry["params"])


def is_grid(entry: dict) -> bool:
    """Whether a plan's strategy has several combinations: of its parameters or of its stop levels."""
    execution = parse_execution(**{k: v for k, v in (entry.get("execution") or {}).items()})
    return grid_of(entry).is_grid or execution.is_grid


def lookahead_problems(entries: Sequence[dict]) -> list[str]:
    """Run the quick look-ahead check (`backtest.strategies.lookahead`, on synthetic candles: LOOKAHEAD_CUTS
    sampled cuts and the cuts at the signal's changes) for every strategy of a run (`RunPlan.strategies`):
    what fails it, one line each (empty: every one passed)."""
    from backtest.strategies import lookahead

    problems = []
    for entry in entries:
        try:
            report = lookahead.check_grid(grid_of(entry), cuts=LOOKAHEAD_CUTS)
        except Exception as exc:  # a user's strategy that raises is refused too, with what it raised
            problems.append(f"{entry['name']}: the check could not run: {type(exc).__name__}: {exc}")
            continue
        if not report["ok"]:
            problems.append(report["problem"])
    return problems
