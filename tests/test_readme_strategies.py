"""The README's "Strategies" section says what the code does: its example is the project's example
module byte for byte, and its table lists exactly the built-in strategies with their defaults."""

from __future__ import annotations

import re

from backtest import strategy
from backtest.strategies import builtins
from tests.support import REPO

README = REPO / "README.md"
EXAMPLE = REPO / "strategies" / "vwma_trend.py"


def strategies_section() -> str:
    text = README.read_text()
    start = text.index("\n## Strategies\n")
    return text[start : text.index("\n## ", start + 1)]


def test_the_readme_example_is_the_example_module():
    blocks = re.findall(r"```python\n(.*?)```", strategies_section(), flags=re.DOTALL)
    assert EXAMPLE.read_text() in blocks


def test_the_readme_table_lists_every_built_in_with_its_defaults():
    rows = re.findall(r"^\| `(\w+)\(([^)]*)\)`", strategies_section(), flags=re.MULTILINE)
    built_in = {
        name: entry
        for name, entry in ((n, strategy.get(n)) for n in strategy.names())
        if type(entry).__module__ == builtins.__name__
    }
    assert sorted(name for name, _ in rows) == sorted(built_in)
    for name, defaults in rows:
        shown = dict(item.split("=") for item in defaults.split(", "))
        declared = {p.name: p for p in built_in[name].params}
        assert shown.keys() == declared.keys(), name
        for key, value in shown.items():
            assert declared[key].parse(value) == declared[key].parse(declared[key].default), (name, key)
