"""Whether the deployment has the pools the DAG's tasks use, asked by `plan` before any waits on one.

A task whose pool does not exist never runs, and nothing fails it: Airflow 3's scheduler passes it
over at every loop ("Tasks using non-existent pool '...' will not be scheduled", in the scheduler's
log only) and it waits in `scheduled` for ever, its run with it. The DAG processor's "non-existent
pools" DAG warning is not made either (Airflow 3.3 never gives `DagBag` its `known_pools`). A task
cannot ask itself: the execution API that task code talks to has no pool route, and task code has
no metadata DB (the supervisor blocks the ORM). What can answer is Airflow's public REST API,
`GET /api/v2/pools`, on the api-server the worker reaches already (the one of `[core]
execution_api_server_url`, else `[api] base_url`), with a token from the simple auth manager's
`/auth/token` (`make airflow`'s, Airflow's default): without a login when
`simple_auth_manager_all_admins`, else as the first of `simple_auth_manager_users` that has a
password in the manager's passwords file (one the worker reads when it runs on the api-server's
machine, as on `make airflow`).

Where that cannot be asked (another auth manager, no passwords file, no api-server answering),
`missing_pools` logs a warning that says why and how to create the pools, and the run goes on.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, Protocol

from backtest_airflow.settings import pool_slots

log = logging.getLogger("backtest_airflow.pools")
DEFAULT_POOL = "default_pool"  # Airflow's own, always there (it cannot be deleted)
TIMEOUT = 10  # seconds a request; at most 2 + one per pool requests: an answer well within a minute
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


class Config(Protocol):
    """What is read of Airflow's configuration (`airflow.sdk.configuration.conf`)."""

    def get(self, section: str, key: str, fallback: Any = ...) -> Any: ...


CREATE_HINT = "`airflow pools set NAME SLOTS DESCRIPTION` (docs/operation.md, 'Concurrency')"


class CannotAsk(Exception):
    """Why the pools cannot be asked about from here."""


def dag_pools(tasks: Iterable[Any]) -> set[str]:
    """The pools a DAG's tasks (operators, mapped ones included) use, Airflow's `default_pool` aside."""
    return {task.pool for task in tasks if task.pool and task.pool != DEFAULT_POOL}


def running_dag_pools() -> set[str]:
    """`dag_pools` of the running task's DAG; none outside a task (nothing to check)."""
    from airflow.sdk import get_current_context

    try:
        dag = get_current_context()["dag"]
    except RuntimeError:  # "no context was found": not in a task
        return set()
    return dag_pools(dag.tasks)


def create_command(name: str) -> str:
    """The CLI command that creates a pool as `make airflow` does (`settings.pool_slots`)."""
    slots, description = pool_slots().get(name, (1, "backtest pool"))
    return f"airflow pools set {name} {slots} {shlex.quote(description)}"


def missing_message(missing: Collection[str]) -> str:
    """The one message a run without its pools fails with: which, and the commands that create them."""
    slots = pool_slots()
    names = ", ".join(f"{name} ({slots[name][0]} slots)" if name in slots else name for name in sorted(missing))
    commands = " and ".join(f"`{create_command(name)}`" for name in sorted(missing))
    return (
        f"pools missing: {names}: create them with {commands} (once per Airflow deployment; `make airflow` "
        "creates them, and on Amazon MWAA `infra/deploy.sh --mwaa-environment NAME`; docs/operation.md, "
        "'Concurrency'). Without them the tasks would wait in `scheduled` for ever"
    )


def api_base_url(conf: Config) -> str:
    """The api-server's root URL as the worker reaches it: `[core] execution_api_server_url` less its
    `/execution/` (the public API is served beside it), else `[api] base_url` as Airflow completes it."""
    execution = (conf.get("core", "execution_api_server_url", fallback=None) or "").rstrip("/")
    if execution.endswith("/execution"):
        return execution.removesuffix("/execution")
    base = conf.get("api", "base_url", fallback=None) or "/"
    return (f"http://localhost:8080{base}" if base.startswith("/") else base).rstrip("/")


def _request(url: str, key: str, token: str | None = None, body: dict | None = None) -> Any:
    """One JSON request (a POST when `body`); its answer's `key`. CannotAsk when there is none."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        headers["Content-Type"] = "application/json"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.loads(response.read())[key]
    except urllib.error.HTTPError as exc:
        raise CannotAsk(f"{request.method} {url}: HTTP {exc.code}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # refused, unreachable, timed out; not Airflow's
        raise CannotAsk(f"{request.method} {url}: {type(exc).__name__}: {exc}") from None


def simple_auth_token(base_url: str, conf: Config) -> str:
    """A token for the public REST API from the simple auth manager's `/auth/token`."""
    manager = conf.get("core", "auth_manager", fallback=None) or SIMPLE_AUTH_MANAGER
    if manager != SIMPLE_AUTH_MANAGER:
        raise CannotAsk(f"the auth manager is {manager}: a task has no login for the REST API")
    if str(conf.get("core", "simple_auth_manager_all_admins", fallback="False")).lower() == "true":
        return _request(f"{base_url}/auth/token", "access_token")
    home = os.path.expanduser(os.environ.get("AIRFLOW_HOME", "~/airflow"))
    path = conf.get("core", "simple_auth_manager_passwords_file", fallback=None) or os.path.join(
        home, "simple_auth_manager_passwords.json.generated"
    )
    try:
        passwords = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CannotAsk(f"no simple auth manager passwords file here ({path}: {exc.strerror or exc})") from None
    users = [
        entry.split(":")[0].strip()
        for entry in str(conf.get("core", "simple_auth_manager_users", fallback="")).split(",")
    ]
    user = next((user for user in users if user in passwords), None)
    if user is None:
        raise CannotAsk(f"no user of [core] simple_auth_manager_users has a password in {path}")
    return _request(f"{base_url}/auth/token", "access_token", body={"username": user, "password": passwords[user]})


def existing_pools(base_url: str, token: str, names: Iterable[str]) -> set[str]:
    """Which of `names` exist, from `GET /api/v2/pools?pool_name_pattern=<name>` (one request a name)."""
    found = set()
    for name in names:
        query = urllib.parse.urlencode({"pool_name_pattern": name, "limit": 100})
        pools = _request(f"{base_url}/api/v2/pools?{query}", "pools", token=token)
        if not isinstance(pools, list):
            raise CannotAsk(f"GET {base_url}/api/v2/pools: not a list of pools")
        found |= {pool.get("name") for pool in pools if isinstance(pool, dict)} & {name}
    return found


def missing_pools(names: Collection[str], conf: Config | None = None) -> list[str]:
    """Those of the pools `names` the deployment does not have, asked of its REST API (sorted).

    None, and a warning saying why, when that cannot be asked from here: a run then goes on, and a
    task of a missing pool waits in `scheduled` (the warning names the commands that create them).
    """
    if not names:
        return []
    if conf is None:
        from airflow.sdk.configuration import conf
    base_url = api_base_url(conf)
    try:
        existing = existing_pools(base_url, simple_auth_token(base_url, conf), sorted(names))
    except CannotAsk as exc:
        # one line: a run goes on, and only a task whose pool is missing would wait in `scheduled`
        log.warning("pools %s not checked (%s); if tasks wait in `scheduled`, create them: %s",
                    ", ".join(sorted(names)), exc, CREATE_HINT)  # fmt: skip
        return []
    return sorted(set(names) - existing)
