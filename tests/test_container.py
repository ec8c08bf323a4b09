"""The job image's dependency set is enough to run a backtest, without Airflow or pandas.

No Docker engine is needed: a fresh virtualenv gets exactly docker/requirements.txt (as the
Dockerfile's `pip install -r` does) and sees only a copy of the `backtest/` package and of the
users' `strategies/` folder beside it (as the Dockerfile's `COPY backtest/ /app/backtest/` and
`COPY strategies/ /app/strategies/` do). The entrypoint then runs end to end there, the
project's own strategies included.
Static checks keep docker/Dockerfile and docker/requirements.txt to that shape.

The virtualenv is cached in `.venv-container/<hash>/`, keyed by docker/requirements.txt and the
Python version, so only the first run (e.g. CI on a clean clone) pays for the install.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from backtest import job
from backtest.data.synthetic import EPOCH_MS, synthetic_candles
from backtest.params import HOUR_MS
from backtest.simulation.metrics import METRIC_NAMES
from backtest.strategy import PROJECT_STRATEGIES, grid_of

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
REQUIREMENTS = REPO / "docker" / "requirements.txt"
VENV_CACHE = REPO / ".venv-container"

RESULT_KEYS = {
    "symbol",
    "strategy",
    "params",
    "start",
    "end",
    "first_bar",
    "last_bar",
    "warmup_bars",
    "data_source",
    "synthetic",
    "execution",
    "final_position",
    "selection",
    "dsr",
    "next",
    "trade_stats",
    "position_now",
    "position_since",
    "position_entry_price",
    "position_return",
    *METRIC_NAMES,
}


# -- static checks: docker/Dockerfile and docker/requirements.txt -----------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def requirement_lines(text: str) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def test_dockerfile_shape():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    by_kind: dict[str, list[str]] = {}
    for keyword, args in instructions:
        by_kind.setdefault(keyword, []).append(args)

    (base,) = by_kind["FROM"]
    assert base.split("@")[0] == "python:3.11-slim"

    (entrypoint,) = by_kind["ENTRYPOINT"]
    assert json.loads(entrypoint) == ["python", "-m", "backtest"]

    users = by_kind.get("USER", [])
    assert users, "the image must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"final USER is {users[-1]!r}"
    last_user = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "USER")
    last_run = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "RUN")
    assert last_user > last_run, "USER must come after the last RUN, so the job runs as that user"

    # What goes into the image: the job's requirements file, the backtest package and the users'
    # strategies beside it (where backtest.strategy.PROJECT_STRATEGIES points), nothing else.
    copies = dict(args.split() for args in by_kind["COPY"])
    assert copies.keys() == {"docker/requirements.txt", "backtest/", "strategies/"}
    assert copies["backtest/"].rstrip("/") == "/app/backtest"
    assert copies["strategies/"].rstrip("/") == "/app/strategies"
    assert PROJECT_STRATEGIES == REPO / "strategies"  # the package's parent folder: /app in the image
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "!backtest/" in ignored and "!strategies/" in ignored  # both in the build context
    requirements_in_image = copies["docker/requirements.txt"]

    installs = [
        command.strip()
        for args in by_kind["RUN"]
        for command in re.split(r"&&|;|\|\|", args)
        if re.search(r"\bpip3?\s+install\b", command)
    ]
    assert installs, "the image must pip install its requirements"
    for command in installs:
        words = command.split()
        words = words[words.index("install") + 1 :]
        positional = [w for w in words if not w.startswith("-")]
        assert "-r" in words and positional == [requirements_in_image], f"installs more than the file: {command!r}"
    assert "apt-get install" not in " ".join(by_kind["RUN"])


def test_job_requirements_are_pinned_and_lean():
    lines = requirement_lines(REQUIREMENTS.read_text())
    assert lines
    names = []
    for line in lines:
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([A-Za-z0-9.+!_-]+)", line)
        assert match, f"not pinned with ==: {line!r}"
        names.append(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    assert len(names) == len(set(names)), "a package is listed twice"
    assert not [n for n in names if "airflow" in n], "Airflow has no place in the job image"
    assert not [n for n in names if n == "pandas" or n.startswith("pandas-")], "the job must run without pandas"


# -- the dependency set, in a fresh virtualenv ------------------------------------------------


def base_python() -> str:
    found = shutil.which("python3.11")
    if found:
        return found
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    pytest.skip("python3.11 not found")


def build_venv(venv: Path) -> None:
    """`python3.11 -m venv` plus `pip install -r docker/requirements.txt`; a stamp marks it whole."""
    shutil.rmtree(venv, ignore_errors=True)
    steps = [
        [base_python(), "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
    ]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            errors = [line for line in done.stderr.splitlines() if not line.startswith("WARNING")]
            pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}):\n" + "\n".join(errors[-20:]))
    (venv / ".complete").write_text(REQUIREMENTS.read_text())


def prune_stale_venvs(keep: str) -> None:
    """Drop cached venvs of earlier requirements files, unless another run holds their lock."""
    for lock_path in VENV_CACHE.glob("*.lock"):
        key = lock_path.stem
        if key == keep:
            continue
        with open(lock_path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(VENV_CACHE / key, ignore_errors=True)
            lock_path.unlink()


@dataclass(frozen=True)
class JobEnv:
    """The image's Python environment and its /app (which holds only the backtest package and the
    users' strategies)."""

    python: str
    app: Path
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.python, *args], cwd=self.app, env=self.env, capture_output=True, text=True, timeout=120
        )


@pytest.fixture(scope="module")
def job_env(tmp_path_factory) -> JobEnv:
    key = hashlib.sha256(REQUIREMENTS.read_bytes() + sys.version.encode()).hexdigest()[:16]
    venv = VENV_CACHE / key
    VENV_CACHE.mkdir(exist_ok=True)
    with open(VENV_CACHE / f"{key}.lock", "w") as lock:  # one build at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = venv / ".complete"
        if not stamp.exists() or stamp.read_text() != REQUIREMENTS.read_text():
            build_venv(venv)
    prune_stale_venvs(keep=key)

    app = tmp_path_factory.mktemp("app")  # mirrors COPY backtest/ /app/backtest/ and strategies/ /app/strategies/
    for folder in ("backtest", "strategies"):
        shutil.copytree(REPO / folder, app / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(PYTHONPATH=str(app), PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1")
    return JobEnv(str(venv / "bin" / "python"), app, env)


@pytest.fixture(scope="module")
def candle_file(tmp_path_factory) -> Path:
    """Synthetic hourly candles (30 days) as a Parquet file in the store's schema."""
    candles = synthetic_candles("TESTUSDT", EPOCH_MS + 100 * 24 * HOUR_MS, EPOCH_MS + 130 * 24 * HOUR_MS)
    path = tmp_path_factory.mktemp("input") / "TESTUSDT.parquet"
    pq.write_table(candles.to_table(), path)
    return path


@pytest.mark.slow
def test_environment_has_no_airflow_or_pandas(job_env):
    for module in ("airflow", "pandas"):
        done = job_env.run("-c", f"import {module}")
        assert done.returncode != 0, f"{module} is importable in the job's environment"
        assert "ModuleNotFoundError" in done.stderr
    done = job_env.run("-c", "import backtest, numpy, pyarrow, boto3; print(backtest.__file__)")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).parent == job_env.app / "backtest", "must use the copied package only"


@pytest.mark.slow
def test_entrypoint_runs_a_backtest(job_env, candle_file, tmp_path):
    results = tmp_path / "results"
    done = job_env.run(
        "-m", "backtest", "run", "--symbol", "TESTUSDT", "--input", str(candle_file), "--window", "24",
        "--results-url", str(results),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, f"stdout must be one JSON object, got {done.stdout!r}"
    result = json.loads(lines[0])
    assert isinstance(result, dict)
    assert set(result) == RESULT_KEYS
    assert result["symbol"] == "TESTUSDT"
    assert result["params"] == {"window": "24", "window_bars": 24, "fee_bps": 10.0}
    assert result["bars"] == 30 * 24
    assert result["data_source"] == "file"

    spec = job.RunSpec(
        symbol="TESTUSDT", grid=grid_of("sma_trend", {"window": "24"}), fee_bps=10.0, input_url=str(candle_file)
    )
    in_process, _ = job.backtest(spec)
    assert result == json.loads(job.to_json(in_process))

    assert json.loads((results / "TESTUSDT.json").read_text()) == result
    equity = pq.read_table(results / "TESTUSDT.equity.parquet")
    assert equity.num_rows == result["bars"]
    assert equity.column("equity")[-1].as_py() == pytest.approx(1 + result["total_return"], rel=1e-12)


@pytest.mark.slow
def test_the_image_layout_finds_the_projects_strategies(job_env, candle_file, tmp_path):
    """/app/strategies beside /app/backtest: listed, and run by the entrypoint like a built-in."""
    done = job_env.run("-m", "backtest", "list-strategies")
    assert done.returncode == 0, done.stderr
    listed = {entry["name"] for entry in json.loads(done.stdout)}
    project = {path.stem for path in (REPO / "strategies").glob("*.py") if not path.name.startswith("_")}
    assert "vwma_trend" in project and project <= listed
    assert {"sma_trend", "sma_cross", "ema_trend", "momentum", "donchian_breakout", "rsi_reversion"} <= listed

    done = job_env.run(
        "-m", "backtest", "run", "--symbol", "TESTUSDT", "--input", str(candle_file), "--strategy", "vwma_trend",
        "--param", "window=1d,2d", "--param", "band=0,20", "--results-url", str(tmp_path / "strategy=vwma_trend"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["strategy"] == "vwma_trend" and result["grid"]["combinations"] == 4
    assert json.loads((tmp_path / "strategy=vwma_trend" / "TESTUSDT.json").read_text()) == result
    spec = job.RunSpec(
        symbol="TESTUSDT",
        grid=grid_of("vwma_trend", {"window": "1d,2d", "band": "0,20"}),
        fee_bps=10.0,
        input_url=str(candle_file),
    )
    assert result == json.loads(job.to_json(job.backtest(spec)[0]))  # the same as in this process

    done = job_env.run("-m", "backtest", "check-strategy", "vwma_trend", "--param", "window=1d,5d")
    assert done.returncode == 0 and json.loads(done.stdout)["ok"], done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["--input", "missing.parquet", "--window", "24"], 3, "input file not found"),
        (["--input", "missing.parquet", "--window", "0"], 2, "invalid window"),
    ],
)
def test_bad_input_exits_with_one_line(job_env, args, exit_code, message):
    done = job_env.run("-m", "backtest", "run", "--symbol", "TESTUSDT", *args)
    assert done.returncode == exit_code
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {done.stderr!r}"
    assert lines[0].startswith("error: ") and message in lines[0]
