"""The pool check in `plan` (issue 23): a run on a deployment without the DAG's pools fails in plan,
within a minute, with one message naming them and the commands that create them, asked of a real
`airflow api-server` (the simple auth manager with a user and its password, as `make airflow` has);
with the pools there the run goes through; where the REST API cannot be asked, a warning, no failure.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import time
from datetime import datetime

import pytest

from backtest_airflow import pools
from backtest_airflow.settings import EXCHANGE_POOL, LOCAL_POOL, pool_slots
from tests.support import AIRFLOW, environment, free_port
from tests.support.dag import load_daily_dag, run_daily_dag
from tests.support.live_airflow import LiveAirflow, queued_seconds
from tests.test_ui_browser import running_api_server

LOGICAL_DATE = datetime.fromisoformat("2026-10-01T00:00:00+00:00")
PASSWORD = "pool-check-secret-1"
CONF = {"pairs": ["BTCUSDT"], "lookback_days": 5, "window": "1d"}


def airflow_cli(*args: str) -> subprocess.CompletedProcess:
    """The `airflow` CLI on the test session's DB (what an operator types)."""
    return subprocess.run([str(AIRFLOW), *args], capture_output=True, text=True, timeout=120)


def delete_pools() -> None:
    for name in (EXCHANGE_POOL, LOCAL_POOL):
        airflow_cli("pools", "delete", name)  # fails (ignored) when it is not there


def messages(caplog, level: int) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == level]


def test_the_dag_uses_the_exchange_pool_and_in_local_mode_the_local_pool():
    local = load_daily_dag(BACKTEST_EXECUTOR="local", BACKTEST_SOURCE="synthetic")
    batch = load_daily_dag(BACKTEST_EXECUTOR="batch", BACKTEST_SOURCE="synthetic")
    assert pools.dag_pools(local.tasks) == {EXCHANGE_POOL, LOCAL_POOL}
    assert pools.dag_pools(batch.tasks) == {EXCHANGE_POOL}  # Batch queues its jobs itself
    assert pools.running_dag_pools() == set()  # not in a task: nothing to check


def test_the_message_names_each_pool_its_slots_and_the_command_that_creates_it():
    message = pools.missing_message([LOCAL_POOL, EXCHANGE_POOL])
    slots, text = pool_slots()[LOCAL_POOL]
    assert message.startswith(f"pools missing: backtest_exchange (2 slots), backtest_local ({slots} slots): create")
    assert f"`airflow pools set backtest_local {slots} {shlex.quote(text)}`" in message
    assert "`airflow pools set backtest_exchange 2 'Refresh tasks: " in message
    assert "`make airflow` creates them, and on Amazon MWAA `infra/deploy.sh --mwaa-environment NAME`" in message


def test_the_api_server_is_the_execution_apis_else_the_base_url():
    from airflow.sdk.configuration import conf

    unset = {"AIRFLOW__CORE__EXECUTION_API_SERVER_URL": None, "AIRFLOW__API__BASE_URL": None}
    with environment(**{**unset, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://10.0.0.5:8080/airflow/execution/"}):
        assert pools.api_base_url(conf) == "http://10.0.0.5:8080/airflow"
    with environment(**{**unset, "AIRFLOW__API__BASE_URL": "https://airflow.example.com/"}):
        assert pools.api_base_url(conf) == "https://airflow.example.com"
    with environment(**unset):
        assert pools.api_base_url(conf) == "http://localhost:8080"  # Airflow's default, as the executor's


@pytest.mark.parametrize(
    "settings, reason",
    [
        ({"AIRFLOW__CORE__AUTH_MANAGER": "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"}, "the auth manager is airflow.providers.fab"),
        ({"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": "/nonexistent/passwords.json"}, "no simple auth manager passwords file"),
        ({"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}, "GET http://127.0.0.1:{port}/auth/token: URLError"),
    ],
)  # fmt: skip
def test_where_the_api_cannot_be_asked_a_warning_says_why_and_nothing_fails(caplog, settings, reason):
    port = free_port()  # nobody listens there
    url = f"http://127.0.0.1:{port}/execution/"
    with environment(AIRFLOW__CORE__EXECUTION_API_SERVER_URL=url, **settings), caplog.at_level(logging.WARNING):
        assert pools.missing_pools({EXCHANGE_POOL}) == []
    (warning,) = messages(caplog, logging.WARNING)
    assert warning.startswith("pools backtest_exchange not checked (")
    assert reason.format(port=port) in warning
    assert warning.endswith(f"if tasks wait in `scheduled`, create them: {pools.CREATE_HINT}")


@pytest.fixture(scope="module")
def api_server(airflow_db, tmp_path_factory):
    """A real api-server on the session's DB with the simple auth manager's user `admin` and its
    password in a passwords file (as `make airflow` runs it); the workers' settings that reach it."""
    home = tmp_path_factory.mktemp("pool-check")
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({"admin": PASSWORD}))
    auth = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }
    with running_api_server(home / "api-server.log", home / "store", **auth) as base:
        yield {**auth, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/"}


@pytest.mark.slow
def test_a_run_without_its_pools_fails_in_plan_at_once_and_with_them_goes_through(api_server, tmp_path, caplog):
    delete_pools()
    try:
        with environment(**api_server), caplog.at_level(logging.WARNING):
            started = time.monotonic()
            dag_run = run_daily_dag(tmp_path / "store", CONF, LOGICAL_DATE)
            took = time.monotonic() - started
        assert took < 60, took
        print(f"dag.test: the run without its pools failed after {took:.1f} s")
        assert dag_run.state == "failed"
        states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
        assert states["plan"] == "failed" and "success" not in states.values(), states
        assert not (tmp_path / "store").exists()  # nothing refreshed, no job
        expected = pools.missing_message([EXCHANGE_POOL, LOCAL_POOL])
        assert [m for m in messages(caplog, logging.ERROR) if "pools missing" in m] == [expected]  # said once
        assert not [m for m in messages(caplog, logging.WARNING) if "cannot check" in m]  # asked, not skipped

        # The message's commands, as an operator would paste them, make the pools: the next run is fine.
        for command in expected.split("`")[1::2]:
            if command.startswith("airflow pools set"):
                done = airflow_cli(*shlex.split(command)[1:])
                assert done.returncode == 0, done.stderr
        caplog.clear()
        with environment(**api_server), caplog.at_level(logging.WARNING):
            assert pools.missing_pools({EXCHANGE_POOL, LOCAL_POOL}) == []
            dag_run = run_daily_dag(tmp_path / "store", CONF, LOGICAL_DATE)
        assert dag_run.state == "success"
        assert not [m for m in messages(caplog, logging.WARNING) + messages(caplog, logging.ERROR) if "pool" in m]

        # One gone again: only that one is named.
        assert airflow_cli("pools", "delete", LOCAL_POOL).returncode == 0
        with environment(**api_server):
            assert pools.missing_pools({EXCHANGE_POOL, LOCAL_POOL}) == [LOCAL_POOL]
    finally:
        delete_pools()  # the session's other tests run without them, as before


@pytest.mark.slow
def test_on_make_airflow_a_run_without_its_pools_fails_in_plan_within_a_minute(tmp_path):
    """The real thing: `make airflow`'s scheduler runs plan in a supervised task process (no DB),
    which asks the stack's REST API as its user; with the pools deleted the run fails in plan."""
    with LiveAirflow(home=tmp_path / "home", port=free_port()) as stack:
        for name in (EXCHANGE_POOL, LOCAL_POOL):
            done = stack.cli("pools", "delete", name)
            assert done.returncode == 0, done.stderr
        stack.unpause()
        run = stack.run_to_end(CONF, timeout=180)
        assert run["state"] == "failed"
        assert queued_seconds(run) < 60, run
        print(f"make airflow: the run without its pools failed {queued_seconds(run):.1f} s after it was queued")
        states = {ti["task_id"]: ti["state"] for ti in stack.task_instances(run["dag_run_id"])}
        assert states["plan"] == "failed" and "success" not in states.values(), states
        log = stack.task_log(run["dag_run_id"], "plan")
        assert json.dumps(pools.missing_message([EXCHANGE_POOL, LOCAL_POOL]))[1:-1] in log, log[-3000:]
        assert "not checked (" not in log
