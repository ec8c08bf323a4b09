"""A live Airflow started exactly as a user starts it: `make airflow`, from a plain shell.

Used by tests/test_airflow_scheduler.py, tests/test_alerts.py and benchmarks/bench_backfill.py. `make airflow` runs
PostgreSQL (pgserver) and api-server, scheduler, dag-processor and triggerer on a free loopback
port in a temp `AIRFLOW_HOME`; this module talks to it through the REST API and the `airflow` CLI
(which reads the home's airflow.cfg), and stops it like Ctrl-C would (SIGTERM).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from backtest_airflow.layout import DAG_ID
from tests.support import AIRFLOW, REPO

TERMINAL = ("success", "failed")


def plain_shell_env(**extra: str) -> dict[str, str]:
    """This process's environment as a fresh shell has it: no venv on PATH, no Airflow/AWS settings."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BACKTEST_", "AWS_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.pop("PYTHONPATH", None)
    return {**env, **extra}


class AirflowFailed(AssertionError):
    pass


@dataclass
class LiveAirflow:
    home: Path
    port: int
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    token: str | None = None
    leftovers: list[str] = field(default_factory=list)  # what `stop` found still running, and killed

    def __enter__(self) -> LiveAirflow:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.leftovers = self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store(self) -> Path:
        return self.home / "store"  # the Makefile's default BACKTEST_DATA_URL for `make airflow`

    def start(self, timeout: float = 240) -> None:
        """`make airflow` in the background; returns when it says it is ready (or fails with its output)."""
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / "make-airflow.log").open("wb")
        env = plain_shell_env(**self.extra_env)
        command = ["make", "-s", "airflow", f"AIRFLOW_LOCAL_HOME={self.home}", f"AIRFLOW_PORT={self.port}"]
        self.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while "Airflow is ready" not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AirflowFailed(f"make airflow did not become ready:\n{self.diagnostics()}")
            time.sleep(0.5)
        password = json.loads((self.home / "passwords.json").read_text())["admin"]
        self.token = self.api("POST", "/auth/token", {"username": "admin", "password": password})["access_token"]

    def output(self) -> str:
        path = self.home / "make-airflow.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 90) -> list[str]:
        """SIGTERM to `make airflow`'s process group, as a terminal's Ctrl-C signals it: the launcher
        stops its components and PostgreSQL. Returns what was still running afterwards (then killed)."""
        if self.process is None:
            return []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout  # make exits at once; the launcher takes a few seconds
        while _processes_of(self.home) and time.monotonic() < deadline:
            time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        return _kill_leftovers(self.home)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """The `airflow` CLI against this stack, as a user runs it (`AIRFLOW_HOME=... airflow ...`)."""
        env = plain_shell_env(AIRFLOW_HOME=str(self.home))
        return subprocess.run(
            [str(AIRFLOW), *args], cwd=self.home, env=env, capture_output=True, text=True, timeout=timeout
        )

    def api(self, method: str, path: str, body: dict | None = None, ok: tuple[int, ...] = (200, 201)) -> dict:
        status, text = self.request(method, path, body)
        if status not in ok:
            raise AirflowFailed(f"{method} {path}: HTTP {status} {text[:2000]}\n{self.diagnostics()}")
        return json.loads(text) if text else {}

    def request(self, method: str, path: str, body: dict | None = None, token: bool = True) -> tuple[int, str]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if token and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        # A read (GET) is asked again once after a timeout: on 2 loaded cores the api-server can
        # stall past 30 s while a backfill's tasks start; a write is never sent twice.
        attempts = 2 if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()
            except TimeoutError:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def unpause(self) -> None:
        """Unpause the DAG: at once, as `make airflow` says it is ready only once the DAG is parsed."""
        self.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})

    def trigger(self, conf: dict, logical_date: str | None = None) -> dict:
        """A run of the DAG through the REST API, as the UI's trigger form makes it; the new run."""
        return self.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": logical_date, "conf": conf})

    def run_to_end(self, conf: dict, logical_date: str | None = None, timeout: float = 300) -> dict:
        """`trigger`, then wait until the run has succeeded or failed; the finished run."""
        (run,) = self.wait_for_runs([self.trigger(conf, logical_date)["dag_run_id"]], timeout)
        return run

    def health(self) -> dict:
        return self.api("GET", "/api/v2/monitor/health")

    def runs(self, run_type: str | None = None) -> list[dict]:
        query = f"?run_type={run_type}&limit=100" if run_type else "?limit=100"
        return self.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns{query}")["dag_runs"]

    def task_instances(self, run_id: str) -> list[dict]:
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id)}/taskInstances?limit=1000"
        return self.api("GET", path)["task_instances"]

    def task_log(self, run_id: str, task_id: str, try_number: int = 1) -> str:
        path = (
            f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id)}/taskInstances/{task_id}/logs/{try_number}?full_content=true"
        )
        content = self.api("GET", path).get("content", [])
        return "\n".join(json.dumps(item) if isinstance(item, dict) else str(item) for item in content)

    def wait_for_runs(self, run_ids: list[str], timeout: float) -> list[dict]:
        """Poll until every run is success or failed; fail with the components' logs at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise AirflowFailed(f"make airflow exited with {self.process.returncode}\n{self.diagnostics()}")
            runs = {run["dag_run_id"]: run for run in self.runs()}
            if all(runs.get(run_id, {}).get("state") in TERMINAL for run_id in run_ids):
                return [runs[run_id] for run_id in run_ids]
            if time.monotonic() > deadline:
                states = {run_id: runs.get(run_id, {}).get("state") for run_id in run_ids}
                raise AirflowFailed(f"runs not finished after {timeout}s: {states}\n{self.diagnostics()}")
            time.sleep(2)

    def wait_for_backfills_done(self, timeout: float = 120) -> None:
        """Until the scheduler has closed every backfill (a DAG runs one backfill at a time)."""
        deadline = time.monotonic() + timeout
        while any(
            b["completed_at"] is None for b in self.api("GET", f"/api/v2/backfills?dag_id={DAG_ID}")["backfills"]
        ):
            if time.monotonic() > deadline:
                raise AirflowFailed(f"a backfill still open after {timeout}s\n{self.diagnostics()}")
            time.sleep(1)

    def diagnostics(self) -> str:
        parts = [f"--- make airflow output ---\n{self.output()[-3000:]}"]
        for path in sorted((self.home / "logs").glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()
            parts.append(f"--- {path.name} (last 25 lines) ---\n" + "\n".join(lines[-25:]))
        return "\n".join(parts)


def quote(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


def _processes_of(home: Path) -> list:
    """Processes started for this home: the launcher, components, task runners, PostgreSQL."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(proc.info["cmdline"] or [])
            environ = proc.info["environ"] or {}
            if proc.pid != os.getpid() and (str(home) in cmdline or environ.get("AIRFLOW_HOME") == str(home)):
                found.append(proc)
    return found


def _kill_leftovers(home: Path) -> list[str]:
    """Kill whatever still runs for this home; what it was."""
    import psutil

    killed = []
    for proc in _processes_of(home):
        with contextlib.suppress(psutil.Error):
            killed.append(" ".join(proc.cmdline()))
            proc.kill()
    return killed


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def queued_seconds(run: dict) -> float:
    """How long a finished run took from being queued to its end."""
    return (parse_time(run["end_date"]) - parse_time(run["queued_at"])).total_seconds()


def concurrency(task_instances: list[dict], task_id: str | None = None) -> int:
    """The most task instances (of `task_id`, or any) that were running at the same moment."""
    events = []
    for ti in task_instances:
        if ti["start_date"] and ti["end_date"] and (task_id is None or ti["task_id"] == task_id):
            events += [(parse_time(ti["start_date"]), 1), (parse_time(ti["end_date"]), -1)]
    peak = running = 0
    for _, step in sorted(events, key=lambda event: (event[0], event[1])):  # an end before a start at a tie
        running += step
        peak = max(peak, running)
    return peak


def scheduling_gaps(
    task_instances: list[dict], since: str = "scheduled_when", until: str = "start_date"
) -> list[float]:
    """Seconds between two moments of each task instance: by default from the scheduler finding it
    ready to run (`scheduled_when`) to its start."""
    return [
        (parse_time(ti[until]) - parse_time(ti[since])).total_seconds()
        for ti in task_instances
        if ti.get(since) and ti.get(until)
    ]
