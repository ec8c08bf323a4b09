"""A real Airflow on loopback: api-server, scheduler (LocalExecutor) and dag-processor, with SQLite.

The components run as separate processes in a fresh AIRFLOW_HOME with the project's dags/ and
plugins/, the DAG in local mode on synthetic candles. A run is triggered through the public REST
API with a `conf` (what the UI's trigger form posts), then three dates are backfilled with the
CLI; every run must succeed and leave a point-in-time leaderboard.

The DAG is `@daily` with `catchup=False`: unpausing it would make the scheduler create a run for
the latest interval with the default params (every configured pair, a year of candles), which
would compete with the runs under test. `[scheduler] use_job_schedule = False` turns those
scheduled runs off (manual and backfill runs are scheduled as usual); the test checks that no
scheduled run appeared.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from backtest.params import parse_time_ms
from backtest.refresh import refresh_pair
from backtest_airflow.planning import run_folder_name
from tests.conftest import REPO

DAG_ID = "crypto_backtest_daily"
PAIRS = ["BTCUSDT", "ETHUSDT"]
CONF = {"pairs": PAIRS, "window": "48", "lookback_days": 20}
TRIGGER_DATE = "2026-11-20T00:00:00Z"
BACKFILL_DATES = ("2026-11-10", "2026-11-12")  # inclusive: three daily runs
AIRFLOW = Path(sys.executable).with_name("airflow")
START_TIMEOUT = 120
RUN_TIMEOUT = 150
TERMINAL = ("success", "failed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Airflow:
    home: Path
    data: Path
    base_url: str
    env: dict[str, str]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    token: str | None = None

    def start(self, name: str, *args: str) -> None:
        log = (self.home / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [str(AIRFLOW), *args],
            env=self.env,
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with everything it started
        )
        log.close()

    def stop(self) -> None:
        import psutil

        descendants = []  # psutil.Process objects: kill() refuses a pid that was reused meanwhile
        for process in self.processes.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                descendants += psutil.Process(process.pid).children(recursive=True)
        for process in self.processes.values():
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self.processes.values():
            _signal_group(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        for child in descendants:  # anything that left its process group
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()

    def api(self, method: str, path: str, body: dict | None = None, ok: tuple[int, ...] = (200, 201)) -> dict:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
        assert status in ok, f"{method} {path}: HTTP {status} {text[:2000]}\n{self.diagnostics()}"
        return json.loads(text) if text else {}

    def runs(self, run_type: str) -> list[dict]:
        return self.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?run_type={run_type}&limit=100")["dag_runs"]

    def task_states(self, run_id: str) -> dict[tuple[str, int], str]:
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances?limit=100"
        return {(ti["task_id"], ti["map_index"]): ti["state"] for ti in self.api("GET", path)["task_instances"]}

    def diagnostics(self) -> str:
        parts = []
        for name in self.processes:
            lines = (self.home / f"{name}.log").read_text(errors="replace").splitlines()
            parts.append(f"--- {name}.log (last 40 lines) ---\n" + "\n".join(lines[-40:]))
        for path in sorted((self.home / "logs").rglob("*.log"))[-6:]:
            lines = path.read_text(errors="replace").splitlines()
            parts.append(f"--- {path.relative_to(self.home)} (last 15 lines) ---\n" + "\n".join(lines[-15:]))
        return "\n".join(parts)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def wait_for(what: str, check, airflow: Airflow, timeout: float, every: float = 1.0):
    """Poll `check()` until it returns something truthy; fail with the components' logs at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        for name, process in airflow.processes.items():
            assert process.poll() is None, f"{name} exited with {process.returncode}\n{airflow.diagnostics()}"
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{airflow.diagnostics()}")
        time.sleep(every)


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """Airflow's components on a free loopback port; all stopped (process groups) afterwards."""
    home = tmp_path_factory.mktemp("airflow-scheduler-home")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BACKTEST_", "AWS_"))}
    env = {
        **inherited,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",  # 3.x has no SequentialExecutor; LocalExecutor runs on SQLite
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "tests.sqlite_settings.CONNECT_ARGS",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "BACKTEST_DATA_URL": str(home / "backtest-data"),
        "BACKTEST_EXECUTOR": "local",
        "BACKTEST_SOURCE": "synthetic",
        "BACKTEST_TASK_RETRIES": "0",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")]),
    }
    stack = Airflow(home=home, data=home / "backtest-data", base_url=base_url, env=env)
    migrate = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, cwd=home, capture_output=True, timeout=300)
    assert migrate.returncode == 0, migrate.stdout.decode()[-3000:] + migrate.stderr.decode()[-3000:]
    try:
        stack.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port))
        stack.start("scheduler", "scheduler")
        stack.start("dag-processor", "dag-processor")
        wait_for("the API server, scheduler and dag-processor", lambda: _healthy(stack), stack, START_TIMEOUT)
        stack.token = stack.api("GET", "/auth/token")["access_token"]  # all-admins: no credentials needed
        dag = wait_for("the DAG to be parsed", lambda: _dag(stack), stack, START_TIMEOUT)
        assert dag["is_paused"] is True  # paused at creation: nothing ran before the test asks
        assert stack.api("GET", "/api/v2/importErrors")["total_entries"] == 0
        yield stack
    finally:
        stack.stop()


def _healthy(stack: Airflow) -> bool:
    try:
        with urllib.request.urlopen(f"{stack.base_url}/api/v2/monitor/health", timeout=5) as response:
            health = json.load(response)
    except (OSError, ValueError):
        return False
    return all(
        health.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler", "dag_processor")
    )


def _dag(stack: Airflow) -> dict | None:
    dag = stack.api("GET", f"/api/v2/dags/{DAG_ID}", ok=(200, 404))
    return dag if dag.get("dag_id") == DAG_ID else None


def wait_for_runs(airflow: Airflow, run_type: str, count: int) -> list[dict]:
    def finished():
        runs = airflow.runs(run_type)
        return runs if len(runs) == count and all(run["state"] in TERMINAL for run in runs) else None

    return wait_for(f"{count} {run_type} run(s) to finish", finished, airflow, RUN_TIMEOUT, every=2)


def results_folder(airflow: Airflow, run: dict) -> Path:
    date = iso(run["data_interval_start"]).strftime("%Y-%m-%d")
    return airflow.data / "results" / DAG_ID / f"date={date}" / f"run={run_folder_name(run['dag_run_id'])}"


def assert_point_in_time_leaderboard(airflow: Airflow, run: dict) -> pd.DataFrame:
    """The run's leaderboard lists every pair, each backtested on exactly its window, up to its interval end."""
    assert run["state"] == "success", f"{run['dag_run_id']}: {airflow.task_states(run['dag_run_id'])}"
    states = airflow.task_states(run["dag_run_id"])
    assert sorted(states) == sorted(
        [("plan", -1), ("rank", -1)] + [(task, i) for task in ("refresh", "backtest") for i in range(len(PAIRS))]
    )
    assert set(states.values()) == {"success"}
    folder = results_folder(airflow, run)
    assert sorted(p.name for p in folder.glob("leaderboard.*")) == [
        "leaderboard.csv",
        "leaderboard.md",
        "leaderboard.parquet",
    ]
    board = pd.read_parquet(folder / "leaderboard.parquet")
    assert sorted(board["symbol"]) == sorted(PAIRS)
    assert (board["status"] == "ok").all() and board["rank"].tolist() == [1, 2]
    assert set(board["window"]) == {CONF["window"]}
    end = iso(run["data_interval_end"])
    for symbol in PAIRS:
        result = json.loads((folder / f"{symbol}.json").read_text())
        assert result["params"]["window"] == CONF["window"] and result["params"]["window_bars"] == 48
        assert result["end"] == z(end)
        assert result["last_bar"] == z(end - timedelta(hours=1))
        assert result["start"] == z(end - timedelta(days=CONF["lookback_days"]))
        assert result["first_bar"] == result["start"]
        assert result["bars"] == CONF["lookback_days"] * 24  # the whole window, not what the store happened to hold
        assert result["warmup_bars"] == 47
    return board


@pytest.mark.slow
def test_a_run_triggered_through_the_rest_api_with_conf_succeeds(airflow):
    airflow.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    run = airflow.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": TRIGGER_DATE, "conf": CONF})
    assert run["run_type"] == "manual" and run["conf"] == CONF

    (finished,) = wait_for_runs(airflow, "manual", 1)
    assert finished["dag_run_id"] == run["dag_run_id"]
    assert finished["data_interval_end"] == TRIGGER_DATE  # a manual run's interval ends at its logical date
    board = assert_point_in_time_leaderboard(airflow, finished)
    assert board["total_return"].notna().all()
    assert airflow.runs("scheduled") == []


@pytest.mark.slow
def test_backfill_runs_are_point_in_time(airflow):
    airflow.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    # The store holds later candles but not the backfill windows' oldest ones: each backfill
    # run's refresh must reach back to its own window's start.
    for symbol in PAIRS:
        refresh_pair(
            symbol, str(airflow.data), until_ms=parse_time_ms("2026-11-25"), history_days=2, source="synthetic"
        )

    first, last = BACKFILL_DATES
    command = [str(AIRFLOW), "backfill", "create", "--dag-id", DAG_ID, "--from-date", first, "--to-date", last]
    command += ["--dag-run-conf", json.dumps(CONF), "--max-active-runs", "3"]
    created = subprocess.run(command, env=airflow.env, cwd=airflow.home, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stdout[-3000:] + created.stderr[-3000:]

    runs = sorted(wait_for_runs(airflow, "backfill", 3), key=lambda run: run["logical_date"])
    assert [run["logical_date"] for run in runs] == [
        "2026-11-10T00:00:00Z",
        "2026-11-11T00:00:00Z",
        "2026-11-12T00:00:00Z",
    ]
    for run in runs:
        assert run["conf"] == CONF
        board = assert_point_in_time_leaderboard(airflow, run)
        assert (board["end"] == run["data_interval_end"]).all()
    ends = [json.loads((results_folder(airflow, run) / "BTCUSDT.json").read_text())["end"] for run in runs]
    assert ends == ["2026-11-10T00:00:00Z", "2026-11-11T00:00:00Z", "2026-11-12T00:00:00Z"]
    assert airflow.runs("scheduled") == []
