"""`make airflow`: a long-running Airflow on this machine, on a real PostgreSQL, from a plain shell.

Starts, in its own `AIRFLOW_HOME`:

- PostgreSQL 16 from the `pgserver` package (a pip-installed server, no system service, no root
  needed; data in `$AIRFLOW_HOME/postgres`, reached over a Unix socket only). Several runs at
  once (a backfill, `max_active_runs`) write the metadata DB concurrently, which SQLite cannot
  take ("database is locked");
- `airflow db migrate`, then the project's pools (`settings.pool_slots`);
- api-server (on `AIRFLOW_HOST`:`AIRFLOW_PORT`, default 127.0.0.1:8080; the port is also the
  execution API URL tasks call), scheduler (LocalExecutor, `parallelism` 4), dag-processor and
  triggerer, each a process group with its log in `$AIRFLOW_HOME/logs/<component>.log`.

The settings go to `$AIRFLOW_HOME/airflow.cfg`, so the `airflow` CLI with that `AIRFLOW_HOME`
talks to the same stack. Once every component is healthy and the DAG is parsed, it prints the
URL and the login (user `admin`, password kept in `$AIRFLOW_HOME/passwords.json`), then
watches the components: if one dies it stops everything and exits 1 with that component's
last log lines; Ctrl-C (or SIGTERM) stops everything, PostgreSQL included. Settings it does not
own (`AIRFLOW__...`) can be overridden from the environment.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from backtest_airflow import layout
from backtest_airflow.settings import pool_slots

PROJECT = Path(__file__).resolve().parents[2]
# One machine: task logs are files the api-server reads itself, so no log servers (they would
# listen on every interface, on fixed ports 8793/8794). Only the api-server listens.
COMPONENTS = {
    "api-server": (),
    "scheduler": ("--skip-serve-logs",),
    "dag-processor": (),
    "triggerer": ("--skip-serve-logs",),
}
HEALTH_PARTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
USER = "admin"
START_TIMEOUT = 180
PARALLELISM = 4  # 2 cores: task processes mostly wait on subprocesses and I/O; see docs/operation.md, "Concurrency"


def _secret(path: Path, make) -> str:
    """A value generated once and kept in the Airflow home (mode 600)."""
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def _query(socket_dir: str, database: str, sql: str, *args) -> bool:
    """Run one statement on the home's PostgreSQL (autocommit); whether it returned a row."""
    import psycopg2

    connection = psycopg2.connect(dbname=database, user="postgres", host=socket_dir)
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    with contextlib.closing(connection) as conn, conn.cursor() as cursor:
        cursor.execute(sql, args)
        return cursor.description is not None and cursor.fetchone() is not None


def start_postgres(home: Path) -> str:
    """Start (or reuse) the home's PostgreSQL with an `airflow` database; its Unix socket folder."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        import pgserver

    server = pgserver.get_server(home / "postgres", cleanup_mode="stop")  # stopped when this process exits
    socket_dir = str(server.get_postmaster_info().socket_dir)
    if not _query(socket_dir, "postgres", "SELECT 1 FROM pg_database WHERE datname = 'airflow'"):
        _query(socket_dir, "postgres", "CREATE DATABASE airflow")
    return socket_dir


def write_config(home: Path, host: str, port: int, socket_dir: str) -> None:
    """The home's `airflow.cfg`: what every component, and the `airflow` CLI, reads.

    So `AIRFLOW_HOME=.airflow .venv/bin/airflow dags trigger ...` works against the running stack.
    `AIRFLOW__SECTION__KEY` variables still override it.
    """
    base_url = f"http://{host}:{port}"
    passwords = home / "passwords.json"
    _secret(passwords, lambda: json.dumps({USER: secrets.token_urlsafe(12)}))
    config = configparser.ConfigParser(interpolation=None)
    config.read_dict(
        {
            "core": {
                "dags_folder": os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT / "dags")),
                "plugins_folder": os.environ.get("AIRFLOW__CORE__PLUGINS_FOLDER", str(PROJECT / "plugins")),
                "executor": "LocalExecutor",
                "parallelism": str(PARALLELISM),
                "load_examples": "False",
                "auth_manager": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
                "simple_auth_manager_users": f"{USER}:admin",
                "simple_auth_manager_passwords_file": str(passwords),
                "execution_api_server_url": f"{base_url}/execution/",
            },
            "database": {"sql_alchemy_conn": f"postgresql+psycopg2://postgres@/airflow?host={socket_dir}"},
            "api": {"host": host, "port": str(port), "base_url": base_url},
            "api_auth": {"jwt_secret": _secret(home / "jwt_secret", lambda: secrets.token_hex(32))},
        }
    )
    with (home / "airflow.cfg").open("w") as file:
        file.write("# Written by `make airflow` (backtest_airflow/local/stack.py) at every start.\n")
        config.write(file)


def airflow_env(home: Path) -> dict[str, str]:
    """The environment of every component: this home, and this venv's `airflow` first on PATH.

    Other `AIRFLOW__...` settings pass through; those that `write_config` owns do not (a stray
    `AIRFLOW__DATABASE__SQL_ALCHEMY_CONN` in the shell must not point the stack elsewhere).
    """
    config = configparser.ConfigParser(interpolation=None)
    config.read(home / "airflow.cfg")
    owned = {f"AIRFLOW__{section}__{key}".upper() for section in config.sections() for key in config[section]}
    owned -= {"AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER"}
    env = {key: value for key, value in os.environ.items() if key not in owned}
    env["AIRFLOW_HOME"] = str(home)
    # `airflow` starts subprocesses as a bare `airflow`: this venv's bin/ goes first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return env


def _airflow(*args: str, env: dict[str, str]) -> None:
    airflow = str(Path(sys.executable).with_name("airflow"))
    done = subprocess.run([airflow, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: airflow {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def create_pools(home: Path, env: dict[str, str]) -> None:
    pools = {name: {"slots": slots, "description": text} for name, (slots, text) in pool_slots().items()}
    path = home / "pools.json"
    path.write_text(json.dumps(pools, indent=2))
    _airflow("pools", "import", str(path), env=env)


def ready(base_url: str, socket_dir: str) -> bool:
    """Every component healthy, and the project's DAG parsed (so a trigger right away finds it)."""
    try:
        with urllib.request.urlopen(f"{base_url}/api/v2/monitor/health", timeout=5) as response:
            health = json.load(response)
    except (OSError, ValueError):
        return False
    if not all(health.get(part, {}).get("status") == "healthy" for part in HEALTH_PARTS):
        return False
    return _query(socket_dir, "airflow", "SELECT 1 FROM dag WHERE dag_id = %s", layout.DAG_ID)


class Stack:
    """The Airflow components as process groups, stopped together."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env = home, env
        self.processes: dict[str, subprocess.Popen] = {}

    def log_path(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def start(self) -> None:
        airflow = str(Path(sys.executable).with_name("airflow"))
        self.log_path("x").parent.mkdir(parents=True, exist_ok=True)
        for name, args in COMPONENTS.items():
            with self.log_path(name).open("ab") as log:
                self.processes[name] = subprocess.Popen(
                    [airflow, name, *args],
                    env=self.env,
                    cwd=self.home,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

    def dead(self) -> str | None:
        return next((name for name, proc in self.processes.items() if proc.poll() is not None), None)

    def tail(self, name: str, lines: int = 30) -> str:
        return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            for proc in self.processes.values():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
            deadline = time.monotonic() + wait
            for proc in self.processes.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            if all(proc.poll() is not None for proc in self.processes.values()):
                return


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    home = Path(os.environ.get("AIRFLOW_HOME", ".airflow")).resolve()
    host = os.environ.get("AIRFLOW_HOST", "127.0.0.1")
    port = int(os.environ.get("AIRFLOW_PORT", "8080"))
    home.mkdir(parents=True, exist_ok=True)
    # `kill` stops it like Ctrl-C; so does SIGINT when a shell started it in the background,
    # where SIGINT is ignored (and Python then installs no handler of its own).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupt)

    print(f"Airflow home {home}: starting PostgreSQL ...", flush=True)
    socket_dir = start_postgres(home)
    write_config(home, host, port, socket_dir)
    env = airflow_env(home)
    print("migrating the metadata DB, creating the pools ...", flush=True)
    _airflow("db", "migrate", env=env)
    create_pools(home, env)
    stack = Stack(home, env)
    base_url = f"http://{host}:{port}"
    try:
        stack.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not ready(base_url, socket_dir):
            if (name := stack.dead()) or time.monotonic() > deadline:
                what = f"{name} exited" if name else f"not healthy with the DAG parsed after {START_TIMEOUT}s"
                print(
                    f"error: Airflow did not start ({what}); last lines of {name or 'scheduler'}.log:", file=sys.stderr
                )
                print(stack.tail(name or "scheduler"), file=sys.stderr)
                return 1
            time.sleep(1)
        password = json.loads((home / "passwords.json").read_text())[USER]
        print(f"Airflow is ready: {base_url}  (login: {USER} / {password})", flush=True)
        print(f"logs: {home / 'logs'}/<component>.log; Ctrl-C stops Airflow and its PostgreSQL.", flush=True)
        while (name := stack.dead()) is None:
            time.sleep(2)
        print(f"error: {name} exited with code {stack.processes[name].returncode}; stopping.", file=sys.stderr)
        print(stack.tail(name), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping Airflow ...", flush=True)
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())
