"""The job image's dependency set is enough to run a backtest, without Airflow or pandas.

No Docker engine is needed: the image's /deps is built the same way here, as a plain folder
(`pip install --target deps -r docker/requirements.txt`, then `docker/prune.py deps`, as the
Dockerfile's `deps` stage does), for an interpreter whose own site-packages hold only pip (as
python:3.11-slim's). The job sees that folder and only a copy of the `backtest/` package and of
the users' `strategies/` folder beside it (as the Dockerfile's `COPY backtest/ /app/backtest/` and
`COPY strategies/ /app/strategies/` do). The entrypoint then runs end to end there, the
project's own strategies included. tests/test_image.py checks the pruned folder itself.
Static checks keep docker/Dockerfile and docker/requirements.txt to that shape.

The environment is cached in `.venv-container/<hash>/`, keyed by docker/requirements.txt,
docker/prune.py and the Python version, so only the first run (e.g. CI on a clean clone) pays
for the install.
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
PRUNE = REPO / "docker" / "prune.py"
VENV_CACHE = REPO / ".venv-container"
# What the image must not carry: the job never imports them (tests/test_image.py checks what it does).
NOT_IN_IMAGE = ("airflow", "pandas", "boto3", "botocore", "requests", "urllib3", "s3transfer")

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


def stages(instructions: list[tuple[str, str]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The build stages: (FROM's arguments, that stage's instructions after FROM)."""
    found: list[tuple[str, list[tuple[str, str]]]] = []
    for keyword, args in instructions:
        if keyword == "FROM":
            found.append((args, []))
        else:
            assert found, f"{keyword} before the first FROM"
            found[-1][1].append((keyword, args))
    return found


def commands(run_args: list[str], program: str) -> list[list[str]]:
    """Each shell command of those RUN arguments that starts `program` (split on && ; ||), as words."""
    found = []
    for args in run_args:
        for command in re.split(r"&&|;|\|\|", args):
            words = command.split()
            if words[: len(program.split())] == program.split():
                found.append(words)
    return found


def test_dockerfile_shape():
    """Two stages: `deps` installs docker/requirements.txt into /deps and prunes it with
    docker/prune.py; the image is python:3.11-slim plus /deps, the package and the strategies."""
    (deps_from, deps), (image_from, image) = stages(dockerfile_instructions(DOCKERFILE.read_text()))
    assert deps_from.split()[0].split("@")[0] == "python:3.11-slim" and deps_from.split()[-2:] == ["AS", "deps"]
    assert image_from.split("@")[0] == "python:3.11-slim", "the image is the same base as its build stage"

    def by_kind(stage):
        kinds: dict[str, list[str]] = {}
        for keyword, args in stage:
            kinds.setdefault(keyword, []).append(args)
        return kinds

    deps_kinds, image_kinds = by_kind(deps), by_kind(image)

    # deps: pip installs exactly the requirements file into /deps, then prune.py prunes /deps.
    deps_copies = deps_kinds["COPY"]
    assert deps_copies == ["docker/requirements.txt docker/prune.py /build/"]
    (install,) = commands(deps_kinds["RUN"], "pip install")
    words = install[2:]
    assert words[words.index("--target") + 1] == "/deps" and words[words.index("-r") + 1] == "/build/requirements.txt"
    assert [w for w in words if not w.startswith("-")] == ["/deps", "/build/requirements.txt"], "installs more"
    assert commands(deps_kinds["RUN"], "python /build/prune.py") == [["python", "/build/prune.py", "/deps"]]
    run_all = " ".join(deps_kinds["RUN"])
    assert run_all.index("pip install") < run_all.index("prune.py"), "prune after the install"

    # The image: nothing installed (no pip, no apt-get), /deps on PYTHONPATH.
    image_runs = " ".join(image_kinds["RUN"])
    assert "pip" not in image_runs.split() and "apt-get" not in image_runs
    assert "PYTHONPATH=/deps" in " ".join(image_kinds["ENV"]).split()

    (entrypoint,) = image_kinds["ENTRYPOINT"]
    assert json.loads(entrypoint) == ["python", "-m", "backtest"]

    users = image_kinds.get("USER", [])
    assert users, "the image must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"final USER is {users[-1]!r}"
    last_user = max(i for i, (keyword, _) in enumerate(image) if keyword == "USER")
    last_run = max(i for i, (keyword, _) in enumerate(image) if keyword == "RUN")
    assert last_user > last_run, "USER must come after the last RUN, so the job runs as that user"

    # What goes into the image: the pruned /deps, the backtest package and the users' strategies
    # beside it (where backtest.strategy.PROJECT_STRATEGIES points), nothing else.
    copies = dict(args.rsplit(" ", 1)[::-1] for args in image_kinds["COPY"])
    assert copies == {"/deps": "--from=deps /deps", "/app/backtest/": "backtest/", "/app/strategies/": "strategies/"}
    assert PROJECT_STRATEGIES == REPO / "strategies"  # the package's parent folder: /app in the image
    ignored = (REPO / ".dockerignore").read_text().split()
    for source in ("backtest/", "strategies/", "docker/requirements.txt", "docker/prune.py"):
        assert f"!{source}" in ignored, f"{source} is not in the build context"


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
    assert not set(names) & set(NOT_IN_IMAGE), "the job never imports these (tests/test_image.py)"


# -- the image's Python environment, without Docker ------------------------------------------


def base_python() -> str:
    found = shutil.which("python3.11")
    if found:
        return found
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    pytest.skip("python3.11 not found")


def cache_key() -> str:
    """What the environment is built from: the requirements, the pruning script, the Python."""
    return hashlib.sha256(REQUIREMENTS.read_bytes() + PRUNE.read_bytes() + sys.version.encode()).hexdigest()[:16]


def build_environment(folder: Path) -> None:
    """`python3.11 -m venv folder/venv` (an interpreter whose site-packages hold only pip, as the
    base image's), `pip install --no-compile --target folder/deps -r docker/requirements.txt` and
    `docker/prune.py folder/deps`, as the Dockerfile's deps stage; a stamp marks it whole."""
    shutil.rmtree(folder, ignore_errors=True)
    python = str(folder / "venv" / "bin" / "python")
    steps = [
        [base_python(), "-m", "venv", str(folder / "venv")],
        [python, "-m", "pip", "install", "--quiet", "--no-compile", "--target", str(folder / "deps"), "-r",
         str(REQUIREMENTS)],
        [python, str(PRUNE), str(folder / "deps")],
    ]  # fmt: skip
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            shutil.rmtree(folder, ignore_errors=True)
            errors = [line for line in (done.stdout + done.stderr).splitlines() if not line.startswith("WARNING")]
            pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}):\n" + "\n".join(errors[-20:]))
    (folder / ".complete").write_text(cache_key())


def prune_stale_venvs(keep: str) -> None:
    """Drop cached environments of earlier inputs, unless another run holds their lock."""
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
    """The image's Python environment: its interpreter, its /deps (the pruned folder) and its
    /app (which holds only the backtest package and the users' strategies)."""

    python: str
    deps: Path
    app: Path
    env: dict[str, str]

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.python, *args], cwd=self.app, env={**self.env, **(env or {})}, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip


def image_environment(app: Path) -> JobEnv:
    """The cached environment (built once per cache_key) and a fresh /app copy in `app`."""
    key = cache_key()
    folder = VENV_CACHE / key
    VENV_CACHE.mkdir(exist_ok=True)
    with open(VENV_CACHE / f"{key}.lock", "w") as lock:  # one build at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = folder / ".complete"
        if not stamp.exists() or stamp.read_text() != key:
            build_environment(folder)
    prune_stale_venvs(keep=key)

    for name in ("backtest", "strategies"):  # mirrors COPY backtest/ /app/backtest/ and strategies/
        shutil.copytree(REPO / name, app / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    python = str(folder / "venv" / "bin" / "python")
    subprocess.run([python, "-m", "compileall", "-q", str(app)], check=True)  # as the image's last RUN
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(  # the image's ENV
        PYTHONPATH=f"{app}{os.pathsep}{folder / 'deps'}",
        PYTHONNOUSERSITE="1",
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return JobEnv(python, folder / "deps", app, env)


@pytest.fixture(scope="module")
def job_env(tmp_path_factory) -> JobEnv:
    return image_environment(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def candle_file(tmp_path_factory) -> Path:
    """Synthetic hourly candles (30 days) as a Parquet file in the store's schema."""
    candles = synthetic_candles("TESTUSDT", EPOCH_MS + 100 * 24 * HOUR_MS, EPOCH_MS + 130 * 24 * HOUR_MS)
    path = tmp_path_factory.mktemp("input") / "TESTUSDT.parquet"
    pq.write_table(candles.to_table(), path)
    return path


@pytest.mark.slow
def test_environment_has_no_airflow_pandas_or_aws_sdk(job_env):
    for module in NOT_IN_IMAGE:
        done = job_env.run("-c", f"import {module}")
        assert done.returncode != 0, f"{module} is importable in the job's environment"
        assert "ModuleNotFoundError" in done.stderr
    done = job_env.run("-c", "import backtest, numpy, pyarrow, pyarrow.fs; print(backtest.__file__, numpy.__file__)")
    assert done.returncode == 0, done.stderr
    package, numpy_file = map(Path, done.stdout.split())
    assert package.parent == job_env.app / "backtest", "must use the copied package only"
    assert numpy_file.is_relative_to(job_env.deps), "must use the pruned dependencies only"


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
