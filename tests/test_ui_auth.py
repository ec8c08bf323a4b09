"""The Backtests routes on a live `airflow api-server` with real authentication (not ALL_ADMINS).

The simple auth manager with two real users and passwords: a request without a token (or with
a forged one) is refused, a user's token from `POST /auth/token` is let in. No browser needed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.support.dag import make_run
from tests.test_ui_browser import running_api_server

pytestmark = pytest.mark.slow
USERS = {"alice": ("admin", "alice-secret-1"), "victor": ("viewer", "victor-secret-2")}


@pytest.fixture(scope="module")
def secured_server(airflow_db, tmp_path_factory):
    """api-server with the simple auth manager's users and passwords, and a store with one run."""
    home = tmp_path_factory.mktemp("secured")
    run = make_run(str(home / "store"), ["BTCUSDT", "ETHUSDT"], lookback_days=10)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({user: password for user, (_, password) in USERS.items()}))
    users = ",".join(f"{user}:{role}" for user, (role, _) in USERS.items())
    with running_api_server(
        home / "api-server.log",
        home / "store",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=users,
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
    ) as base:
        yield base, run


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
