"""Parameter grids: every combination of a strategy's parameter values, minus rejected ones."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from backtest.errors import InputError
from backtest.strategies.contract import Combo, Strategy
from backtest.strategies.registry import get

MAX_COMBINATIONS = 100_000


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


def grid_of(name: str, spec: dict[str, Any] | None = None) -> Grid:
    """The grid of the registered strategy `name` for {param: values} (defaults for the rest)."""
    return make_grid(get(name), spec or {})
