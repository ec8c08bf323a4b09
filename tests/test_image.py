"""The image's pruned dependencies (docker/prune.py, docs/image.md): within the size budget,
without what the job never loads, and enough for the job: it loads nothing else, reads and
writes S3 through pyarrow alone, and the job's own tests pass on the pruned folder.

The folder is tests/test_container.py's (`.venv-container/<hash>/deps`, built as the
Dockerfile's deps stage builds /deps). The job's test suite on it takes minutes, so it runs
only with BACKTEST_IMAGE_SUITE=1 (`make image-test`).

This module is also the inner suite's pytest plugin (`-p tests.test_image`): its
`pytest_collection_modifyitems` deselects there the tests that need moto's server or Airflow's
database, which are dev tools, not the image's; the S3 path is tested here instead, with the
job in the pruned environment and moto in this process. Its top-level imports are therefore
the standard library and pytest only.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUDGET_MIB = 160  # the installed Python dependencies of the image (issue 23; was 306 MiB)
# The job's tests: every test module whose module-level imports (followed through the project's
# tests, backtest and strategies modules) need nothing beyond the standard library and what the
# image and the test runner hold; less these, which test something other than the job's code.
ALLOWED_THIRD_PARTY = {"numpy", "pyarrow", "pytest", "hypothesis"}
PROJECT_ROOTS = {"tests", "backtest", "strategies"}
NOT_JOB_TESTS = {
    "test_faults.py": "runs `python -m backtest refresh` processes: the refresh runs on the Airflow workers",
    "test_container.py": "builds the image's environment (this suite runs in it)",
    "test_image.py": "this module",
    "test_docs.py": "the documentation's files",
    "test_layout.py": "the source files' layout",
}
DEV_ONLY_FIXTURES = {"moto_server", "airflow_db"}  # moto's S3 server, Airflow's metadata DB
DEV_ONLY_PARAMS = {("store_url", "s3")}  # conftest's store_url asks for moto's server by itself
SUITE_VARIABLE = "BACKTEST_IMAGE_SUITE"


def load_prune():
    spec = importlib.util.spec_from_file_location("prune", REPO / "docker" / "prune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the inner suite's plugin ------------------------------------------------------------------


def pytest_collection_modifyitems(config, items):
    """In the inner suite only: deselect the tests that need a dev-only fixture."""
    if os.environ.get(SUITE_VARIABLE) != "inner":
        return

    def dev_only(item) -> bool:
        params = getattr(getattr(item, "callspec", None), "params", {})
        return bool(DEV_ONLY_FIXTURES & set(getattr(item, "fixturenames", ()))) or any(
            params.get(name) == value for name, value in DEV_ONLY_PARAMS
        )

    kept = [item for item in items if not dev_only(item)]
    deselected = [item for item in items if item not in kept]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


# -- which tests are the job's -----------------------------------------------------------------


def module_level_imports(path: Path) -> set[str]:
    """Dotted names imported at module level (also under a top-level if/try), not in functions."""
    found: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If | ast.Try):
                for block in (node.body, node.orelse, *(h.body for h in getattr(node, "handlers", []))):
                    visit(block)

    visit(ast.parse(path.read_text(), str(path)).body)
    return found


def project_file(name: str) -> Path | None:
    parts = name.split(".")
    for candidate in (REPO.joinpath(*parts).with_suffix(".py"), REPO.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def third_party_needs(path: Path, seen: set[Path] | None = None) -> set[str]:
    """Top-level names outside the standard library and the project's job code that importing
    `path` needs (each package's __init__ on the way counts too)."""
    seen = set() if seen is None else seen
    if path in seen:
        return set()
    seen.add(path)
    needs: set[str] = set()
    for name in module_level_imports(path):
        top = name.split(".")[0]
        if top in PROJECT_ROOTS:
            parts = name.split(".")
            for prefix in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
                found = project_file(prefix)
                if found:
                    needs |= third_party_needs(found, seen)
        elif top not in sys.stdlib_module_names and top != "__future__":
            needs.add(top)
    return needs


def job_test_modules() -> list[str]:
    return [
        path.relative_to(REPO).as_posix()
        for path in sorted((REPO / "tests").glob("test_*.py"))
        if path.name not in NOT_JOB_TESTS and third_party_needs(path) <= ALLOWED_THIRD_PARTY
    ]


def test_the_job_tests_are_a_principled_selection():
    selected = job_test_modules()
    for module in ("test_engine.py", "test_execution.py", "test_store.py", "test_cli_run.py", "test_walk_forward.py"):
        assert f"tests/{module}" in selected
    for module in ("test_refresh.py", "test_dag_local.py", "test_report.py", "test_faults.py", "test_docs.py"):
        assert f"tests/{module}" not in selected  # requests, Airflow, pandas; not the job's code
    assert set(NOT_JOB_TESTS) <= {path.name for path in (REPO / "tests").glob("test_*.py")}


# -- the pruned folder -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def job_env(tmp_path_factory):
    from tests.test_container import image_environment

    return image_environment(tmp_path_factory.mktemp("app"))


@pytest.mark.slow
def test_the_pruned_dependencies_are_within_budget(job_env):
    size = load_prune().tree_size(job_env.deps)
    assert size.apparent / 2**20 <= BUDGET_MIB and size.on_disk / 2**20 <= BUDGET_MIB, size
    assert sorted(p.name for p in job_env.deps.iterdir() if not p.name.endswith(".dist-info")) in (
        ["numpy", "numpy.libs", "pyarrow"],
        ["bin", "numpy", "numpy.libs", "pyarrow"],
    )


@pytest.mark.slow
def test_pruning_left_nothing_the_job_never_loads(job_env):
    deps = job_env.deps
    leftovers = [
        path.relative_to(deps).as_posix()
        for pattern in ("**/tests", "**/*.pyx", "**/*.pxd", "**/*.h", "**/*.pyi", "**/*flight*", "**/include")
        for path in deps.glob(pattern)
        if not path.relative_to(deps).parts[0].endswith(".dist-info")  # licenses stay
    ]
    assert leftovers == []
    assert (deps / "pyarrow" / "libarrow_python.so").is_symlink()  # one copy of the library, not three
    for needed in ("libarrow_s3.so.*", "libparquet.so.*", "libarrow_dataset.so.*", "_s3fs.*.so", "_csv.*.so"):
        assert list((deps / "pyarrow").glob(needed)), needed
    compiled = list((deps / "pyarrow" / "__pycache__").glob("parquet*.pyc")) or list(
        (deps / "pyarrow" / "parquet" / "__pycache__").glob("core.*.pyc")
    )
    assert compiled, "byte-compiled in the image, so no start compiles them again"


TRACE = """
import atexit, runpy, sys
OUT = sys.argv[1]
def dump():
    with open(OUT, "w") as out:
        for name, module in sorted(sys.modules.items()):
            out.write(f"{name}\\t{getattr(module, '__file__', None) or ''}\\n")
atexit.register(dump)
sys.argv = ["backtest", *sys.argv[2:]]
runpy.run_module("backtest", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_the_job_loads_only_numpy_and_pyarrow(job_env, tmp_path):
    """What `run` (as the DAG renders it: a store, a grid, execution options, a walk-forward or a
    hold-out, results), check-strategy and list-strategies import, from sys.modules at exit."""
    from backtest.data.store import CandleStore
    from backtest.data.synthetic import synthetic_candles
    from tests.support import STORE_SINCE, STORE_UNTIL

    store = str(tmp_path / "store")
    CandleStore(store).write("BTCUSDT", synthetic_candles("BTCUSDT", STORE_SINCE, STORE_UNTIL), "synthetic")
    csv = tmp_path / "candles.csv"
    runs = {
        "run-grid": ["run", "--symbol", "BTCUSDT", "--data-url", store, "--strategy", "sma_cross",
                     "--param", "fast=12h,1d", "--param", "slow=5d,10d", "--sl=0.05", "--trail=0.1",
                     "--direction=long_short", "--fee-bps", "10", "--slippage-bps", "2", "--holdout-days", "10",
                     "--select-by", "sharpe", "--results-url", str(tmp_path / "results" / "grid")],
        "run-walk-forward": ["run", "--symbol", "BTCUSDT", "--data-url", store, "--strategy", "vwma_trend",
                             "--param", "window=1d,2d", "--walk-forward", "30d:10d", "--select-by",
                             "total_return", "--results-url", str(tmp_path / "results" / "wf")],
        "run-csv": ["run", "--symbol", "BTCUSDT", "--input", str(csv), "--window", "24"],
        "check-strategy": ["check-strategy", "sma_trend"],
        "list-strategies": ["list-strategies"],
    }  # fmt: skip
    import pyarrow.csv

    pyarrow.csv.write_csv(synthetic_candles("BTCUSDT", STORE_SINCE, STORE_UNTIL).to_table(), csv)
    job = {"BACKTEST_JOB_NAME": "backtest-BTCUSDT-sma_cross-20240101-0123abcd"}
    loaded: dict[str, str] = {}
    for name, args in runs.items():
        modules = tmp_path / f"{name}.modules"
        done = job_env.run("-c", TRACE, str(modules), *args, env=job)
        assert done.returncode == 0, f"{name}: {done.stderr}"
        loaded.update(line.split("\t") for line in modules.read_text().splitlines())
    from_deps = {name.split(".")[0] for name, file in loaded.items() if file.startswith(f"{job_env.deps}{os.sep}")}
    assert from_deps == {"numpy", "pyarrow"}
    elsewhere = {name for name, file in loaded.items() if file and not file.startswith(str(job_env.deps))}
    site = {name for name in elsewhere if "site-packages" in loaded[name]}
    assert site <= {"_distutils_hack"}, site  # setuptools' .pth hook, in the base image's site-packages too
    assert not {m for m in loaded if m.startswith(("pyarrow.flight", "pyarrow._flight", "pyarrow._orc"))}


@pytest.mark.slow
def test_the_job_reads_and_writes_s3_through_pyarrow_alone(job_env, s3_bucket):
    """The production path (--data-url and --results-url on S3) in the pruned environment, which has
    no boto3: the store is written from this process (moto's server here), the job reads it."""
    from backtest import job
    from backtest.data.storage import read_bytes, resolve
    from backtest.data.store import CandleStore
    from backtest.data.synthetic import synthetic_candles
    from backtest.params import parse_time_ms
    from backtest.strategy import grid_of
    from tests.support import STORE_SINCE, STORE_UNTIL

    url = f"s3://{s3_bucket}/data"
    CandleStore(url).write("ETHUSDT", synthetic_candles("ETHUSDT", STORE_SINCE, STORE_UNTIL), "synthetic")
    results = f"s3://{s3_bucket}/results/strategy=sma_trend"
    aws = {k: os.environ[k] for k in os.environ if k.startswith("AWS_")}  # moto's endpoint and test keys
    done = job_env.run(
        "-m", "backtest", "run", "--symbol", "ETHUSDT", "--data-url", url, "--start", "2024-04-01",
        "--window", "1d,2d", "--results-url", results, env=aws,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    spec = job.RunSpec(
        symbol="ETHUSDT",
        grid=grid_of("sma_trend", {"window": "1d,2d"}),
        fee_bps=10.0,
        start_ms=parse_time_ms("2024-04-01", "--start"),
        data_url=url,
    )
    assert result == json.loads(job.to_json(job.backtest(spec)[0]))
    assert json.loads(read_bytes(resolve(results + "/ETHUSDT.json"))) == result
    assert read_bytes(resolve(results + "/ETHUSDT.equity.parquet"))[:4] == b"PAR1"


# -- the job's tests on the pruned folder ------------------------------------------------------


@pytest.fixture(scope="module")
def test_runner(tmp_path_factory, job_env) -> Path:
    """pytest and hypothesis (constraints.txt's pins) in a folder of their own."""
    folder = tmp_path_factory.mktemp("test-runner")
    done = subprocess.run(
        [job_env.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(folder),
         "pytest", "hypothesis", "-c", str(REPO / "constraints.txt")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return folder


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get(SUITE_VARIABLE) != "1", reason=f"minutes: set {SUITE_VARIABLE}=1 (make image-test)")
def test_the_job_tests_pass_on_the_pruned_dependencies(job_env, test_runner):
    modules = job_test_modules()
    env = {
        **job_env.env,
        "PYTHONPATH": os.pathsep.join(map(str, (REPO, job_env.deps, test_runner))),  # the repo's job code
        SUITE_VARIABLE: "inner",
    }
    began = time.monotonic()
    done = subprocess.run(
        [job_env.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.test_image", *modules],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
    print(f"{len(modules)} modules on the pruned folder in {time.monotonic() - began:.0f} s: {summary}")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary
