"""The package layout as the architecture (docs: README "Layout"): which package may import which,
no import cycle, modules small enough to read, and the DAG file only wiring.

Imports are read from the source with `ast` (every `import` and `from ... import`, also inside
functions), so a lazy import cannot hide a dependency that points the wrong way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import REPO

PACKAGES = ("backtest", "backtest_airflow")
# What each part of the job may import of the project: dependencies point one way,
# cli -> job -> simulation -> strategies -> data -> (errors, params).
SHARED = {"backtest", "backtest.errors", "backtest.params", "backtest.result_files"}
ALLOWED = {
    "backtest.data": SHARED | {"backtest.data"},
    "backtest.strategies": SHARED | {"backtest.data", "backtest.strategies"},
    "backtest.simulation": SHARED | {"backtest.data", "backtest.strategies", "backtest.simulation"},
    "backtest.job": SHARED | {"backtest.data", "backtest.strategies", "backtest.simulation"},
    "backtest.strategy": SHARED | {"backtest.data", "backtest.strategies"},
    "backtest.errors": {"backtest"},
    "backtest.params": {"backtest", "backtest.errors"},
    "backtest.result_files": {"backtest"},
}
MAX_LINES = {"backtest": 400, "backtest_airflow": 300}
MAX_DAG_LINES = 160
DAG_FILE = REPO / "dags" / "crypto_backtest_daily.py"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every dotted name `path` imports: `import a.b` gives a.b, `from a import b` gives a and a.b."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports (a `from package import name` of a submodule counts as that module)."""
    return {name for name in imported_names(path) if name in modules}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def owner(module: str) -> str | None:
    """The most specific ALLOWED key that `module` belongs to."""
    keys = [key for key in ALLOWED if module == key or module.startswith(key + ".")]
    return max(keys, key=len) if keys else None


def within(module: str, allowed: set[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed if a != "backtest") or module == "backtest"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return [*path[path.index(child) :], child]
            if child not in state and (cycle := visit(child)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_job_dependencies_point_one_way():
    wrong = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if (key := owner(module))
        for target in sorted(targets)
        if target.startswith("backtest.") and not within(target, ALLOWED[key])
    ]
    assert wrong == []


def test_the_job_imports_neither_airflow_nor_pandas_nor_the_glue():
    for name, path in project_modules().items():
        if name.split(".")[0] != "backtest":
            continue
        roots = {n.split(".")[0] for n in imported_names(path)}
        assert not roots & {"airflow", "pandas", "backtest_airflow"}, name


def test_report_imports_no_airflow_and_only_the_dag_imports_local():
    for name, path in project_modules().items():
        roots = imported_names(path)
        if name.startswith("backtest_airflow.report"):
            assert not any(r == "airflow" or r.startswith("airflow.") for r in roots), name
        if not name.startswith("backtest_airflow.local"):
            assert not any(r.startswith("backtest_airflow.local") for r in roots), name


def test_every_package_says_what_lives_there():
    for name, path in project_modules().items():
        if path.name == "__init__.py":
            assert ast.get_docstring(ast.parse(path.read_text())), f"{name} has no docstring"


@pytest.mark.parametrize("package", PACKAGES)
def test_modules_are_small_enough_to_read(package):
    limit = MAX_LINES[package]
    long = {
        str(p.relative_to(REPO)): n
        for p in sorted((REPO / package).rglob("*.py"))
        if (n := len(p.read_text().splitlines())) >= limit
    }
    assert long == {}, f"modules of {package}/ must stay under {limit} lines"


def test_the_dag_file_only_wires_tasks():
    tree = ast.parse(DAG_FILE.read_text())
    assert len(DAG_FILE.read_text().splitlines()) <= MAX_DAG_LINES
    # Its functions are the DAG and the tasks it declares (decorated); their bodies call task
    # bodies that live in backtest_airflow, so no loops or comprehensions compute anything here.
    for node in ast.walk(tree):
        assert not isinstance(node, ast.For | ast.While | ast.ListComp | ast.DictComp | ast.SetComp), ast.dump(node)[
            :80
        ]
    undecorated = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.decorator_list]
    assert undecorated == []
