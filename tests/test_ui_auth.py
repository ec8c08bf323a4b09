"""The Backtests routes on a live `airflow api-server` with real authentication (not ALL_ADMINS).

The simple auth manager with two real users and passwords: a request without a token (or with
a forged one) is refused, a user's token from `POST /auth/token` is let in. No browser needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.report_helpers import make_run
from tests.test_ui_browser import free_port, stop, wait_until_healthy

pytestmark = pytest.mark.slow
USERS = {"alice": ("admin", "alice-secret-1"), "victor": ("viewer", "victor-secret-2")}


@pytest.fixture(scope="module")
def secured_server(airflow_db, tmp_path_factory):
    """api-server with the simple auth manager's users and passwords, and a store with one run."""
    home = tmp_path_factory.mktemp("secured")
    run = make_run(str(home / "store"), ["BTCUSDT", "ETHUSDT"], lookback_days=10)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({user: password for user, (_, password) in USERS.items()}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = home / "api-server.log"
    env = {
        **os.environ,
        "BACKTEST_DATA_URL": str(home / "store"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{role}" for u, (role, _) in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__BASE_URL": base,
    }
    airflow = Path(sys.executable).with_name("airflow")
    command = [str(airflow), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(process, base, log)
        yield base, run
    finally:
        stop(process)


def request(url: str, token: str | None = None, data: dict | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = None
    if data is not None:
        body, headers["Content-Type"] = json.dumps(data).encode(), "application/json"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def token(base: str, user: str, password: str) -> tuple[int, str | None]:
    status, body = request(f"{base}/auth/token", data={"username": user, "password": password})
    return status, json.loads(body).get("access_token") if status == 201 else None


def test_backtests_routes_need_a_logged_in_user(secured_server):
    base, run = secured_server
    routes = [f"{base}/backtests/", f"{base}/backtests/report/{run['date']}/{run['folder']}"]
    for url in routes:
        assert request(url)[0] == 401  # no cookie, no token
        assert request(url, token="forged.jwt.token")[0] in (401, 403)

    assert token(base, "alice", "wrong password") == (401, None)
    for user, (_, password) in USERS.items():
        status, access = token(base, user, password)
        assert status == 201 and access
        listing, page = request(routes[0], token=access)
        assert listing == 200 and f'data-run="{run["folder"]}"' in page, user
        status, served = request(routes[1], token=access)
        assert status == 200 and 'id="leaderboard-table"' in served, user
