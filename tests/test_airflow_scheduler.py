"""The DAG operated as its users do, on a real Airflow started by `make airflow` from a plain shell.

`make airflow` (PostgreSQL from pgserver; api-server, scheduler with LocalExecutor, dag-processor
and triggerer on a free loopback port) runs in a temp home with the DAG in local mode on
synthetic candles and the production retry settings. Every trigger path a user has is exercised
against it: REST with and without a logical date, `airflow dags trigger`, a 3-day backfill of
the 10 configured pairs through `airflow backfill create` and another through
`POST /api/v2/backfills`. Every run must succeed with a leaderboard whose window ends where the
docs say (docs/operation.md), every component must stay healthy, and the concurrency bounds (parallelism, the
exchange pool) must hold. Bad params must fail the run in seconds without a retry.

`[scheduler] use_job_schedule = False` keeps the scheduler from adding its own run for the latest
day (with the default year of candles) while these runs are measured; manual and backfill runs
are scheduled as usual.
"""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime, timedelta

import pandas as pd
import psutil
import pytest

from backtest_airflow.layout import run_folder_name
from backtest_airflow.local.stack import PARALLELISM
from backtest_airflow.settings import EXCHANGE_POOL, pairs_from_file, pool_slots
from tests.support import free_port
from tests.support.live_airflow import DAG_ID, LiveAirflow, concurrency, parse_time, queued_seconds

pytestmark = pytest.mark.slow

SMALL = {"pairs": ["BTCUSDT", "ETHUSDT"], "window": "48", "lookback_days": 20}
PAIRS = pairs_from_file()  # the 10 configured pairs: what a backfill with no conf backtests
RUN_TIMEOUT = 600


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    home, settings = tmp_path_factory.mktemp("make-airflow"), {"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}
    with LiveAirflow(home=home, port=free_port(), extra_env=settings) as stack:
        yield stack
    assert "stopping Airflow" in stack.output() and stack.leftovers == [], stack.leftovers  # Postgres included


def z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expected_end(run: dict) -> datetime:
    """The rule in docs/operation.md: a trigger's logical date, else the interval end, else the
    logical date, else run_after; down to the hour."""
    asked = run["logical_date"] if run["run_type"] == "manual" else None
    moment = asked or run["data_interval_end"] or run["logical_date"] or run["run_after"]
    return parse_time(moment).replace(minute=0, second=0, microsecond=0)


def assert_point_in_time(airflow: LiveAirflow, run: dict, pairs: list[str], conf: dict) -> pd.DataFrame:
    """The run succeeded and ranked every pair, each backtested on exactly its window, ending at its as-of moment."""
    tis = airflow.task_instances(run["dag_run_id"])
    assert run["state"] == "success", {(ti["task_id"], ti["map_index"]): ti["state"] for ti in tis}
    assert {ti["state"] for ti in tis} == {"success"}
    end = expected_end(run)
    folder = airflow.store / "results" / DAG_ID / f"date={end:%Y-%m-%d}" / f"run={run_folder_name(run['dag_run_id'])}"
    board = pd.read_parquet(folder / "leaderboard.parquet")
    assert sorted(board["symbol"]) == sorted(pairs)
    assert (board["status"] == "ok").all()
    assert (board["end"] == z(end)).all()
    lookback = conf.get("lookback_days", 365)
    for symbol in pairs:
        result = json.loads((folder / "strategy=sma_trend" / f"{symbol}.json").read_text())
        assert result["end"] == z(end) and result["last_bar"] == z(end - timedelta(hours=1))
        assert result["start"] == z(end - timedelta(days=lookback)) == result["first_bar"]
        assert result["bars"] == lookback * 24  # the whole window, not what the store happened to hold
    return board


def test_make_airflow_starts_everything_from_a_plain_shell(airflow):
    health = airflow.health()
    assert {part: health[part]["status"] for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == {
        "metadatabase": "healthy",
        "scheduler": "healthy",
        "triggerer": "healthy",
        "dag_processor": "healthy",
    }
    assert f"Airflow is ready: {airflow.base_url}  (login: admin / " in airflow.output()
    # Nothing listens but the API, and only on loopback (PostgreSQL has a Unix socket only, no log servers).
    listening = {
        (conn.laddr.ip, conn.laddr.port)
        for proc in psutil.Process(airflow.process.pid).children(recursive=True)
        for conn in proc.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }
    assert listening == {("127.0.0.1", airflow.port)}
    config = airflow.cli("config", "get-value", "database", "sql_alchemy_conn")
    assert config.returncode == 0 and config.stdout.startswith("postgresql+psycopg2://"), config.stderr
    pools = {pool["name"]: pool["slots"] for pool in airflow.api("GET", "/api/v2/pools")["pools"]}
    assert {name: pools.get(name) for name in pool_slots()} == {name: s for name, (s, _) in pool_slots().items()}
    dag = airflow.api("GET", f"/api/v2/dags/{DAG_ID}")
    assert dag["is_paused"] is True and airflow.api("GET", "/api/v2/importErrors")["total_entries"] == 0
    # The Backtests page: its bare prefix redirects; it needs a login.
    status, _ = airflow.request("GET", "/backtests/", token=False)
    assert status in (401, 403)
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(f"{airflow.base_url}/backtests?limit=5", timeout=10)
    assert redirect.value.code == 307 and redirect.value.headers["Location"] == "/backtests/?limit=5"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_bad_params_fail_the_run_in_seconds_without_a_retry(airflow):
    airflow.unpause()
    conf = {"pairs": ["btc-usd"], "window": "abc", "fee_bps": -3, "windw": 5}
    failed = airflow.run_to_end(conf, timeout=120)
    assert failed["state"] == "failed"
    took = queued_seconds(failed)
    assert took < 60, took
    tis = {ti["task_id"]: ti for ti in airflow.task_instances(failed["dag_run_id"])}
    assert tis["plan"]["state"] == "failed" and tis["plan"]["try_number"] == 1  # not retried (retries: 2)
    assert tis["rank"]["state"] == "upstream_failed" and tis["rank"]["pid"] is None  # never ran
    assert {tis[task]["state"] for task in ("jobs", "refresh", "backtest", "candles")} == {"upstream_failed"}
    log = airflow.task_log(failed["dag_run_id"], "plan")
    for problem in ("unknown param(s) 'windw'", "invalid symbol(s) 'btc-usd'", "invalid window 'abc'", "invalid fee"):
        assert problem in log
    assert not (airflow.store / "candles").exists()  # nothing refreshed, nothing launched

    # An empty pair list is refused by the trigger itself (the form's schema), before any run exists.
    status, text = airflow.request(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {"pairs": []}}
    )
    assert status == 400 and "pairs" in text


def test_every_trigger_path_and_two_backfills_succeed_point_in_time(airflow):
    airflow.unpause()
    # The UI form and REST: with a logical date, and without one (as of the hour it was queued in).
    with_date = airflow.trigger(SMALL, "2026-11-20T00:00:00Z")
    without_date = airflow.trigger(SMALL)
    # `airflow dags trigger`, with no logical date.
    cli = airflow.cli("dags", "trigger", DAG_ID, "--conf", json.dumps(SMALL), "--output", "json")
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]
    known = {with_date["dag_run_id"], without_date["dag_run_id"]}
    (from_cli,) = [run for run in airflow.runs("manual") if run["dag_run_id"] not in known and run["conf"] == SMALL]
    # ... and with one: Airflow gives it the data interval of now; the run is as of the date asked for.
    dated = {**SMALL, "window": "24"}
    cli = airflow.cli(
        "dags", "trigger", DAG_ID, "--conf", json.dumps(dated), "--logical-date", "2026-11-21T00:00:00+00:00"
    )
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]
    (dated_cli,) = [run for run in airflow.runs("manual") if run["conf"] == dated]
    # A 3-day backfill of the 10 configured pairs, default params, through the CLI.
    command = ["backfill", "create", "--dag-id", DAG_ID, "--from-date", "2026-11-10", "--to-date", "2026-11-12"]
    created = airflow.cli(*command, "--max-active-runs", "3")
    assert created.returncode == 0, created.stdout[-3000:] + created.stderr[-3000:]

    manual_ids = [with_date["dag_run_id"], without_date["dag_run_id"], from_cli["dag_run_id"], dated_cli["dag_run_id"]]
    manual = airflow.wait_for_runs(manual_ids, RUN_TIMEOUT)
    assert manual[0]["logical_date"] == "2026-11-20T00:00:00Z"
    assert manual[1]["logical_date"] is None and manual[2]["logical_date"] is None
    assert manual[3]["logical_date"] == "2026-11-21T00:00:00Z" and manual[3]["data_interval_end"][:10] != "2026-11-21"
    assert expected_end(manual[3]) == datetime(2026, 11, 21, tzinfo=UTC)
    for run, conf in zip(manual, [SMALL, SMALL, SMALL, dated], strict=True):
        assert_point_in_time(airflow, run, SMALL["pairs"], conf)
    first = sorted(run["dag_run_id"] for run in airflow.runs("backfill"))
    assert len(first) == 3
    backfill_cli = airflow.wait_for_runs(first, RUN_TIMEOUT)
    airflow.wait_for_backfills_done()

    # Another 3 days through the REST API (one backfill of a DAG runs at a time).
    body = {"dag_id": DAG_ID, "from_date": "2026-11-13T00:00:00Z", "to_date": "2026-11-15T00:00:00Z"}
    airflow.api("POST", "/api/v2/backfills", {**body, "max_active_runs": 3})
    second = sorted(run["dag_run_id"] for run in airflow.runs("backfill") if run["dag_run_id"] not in first)
    assert len(second) == 3
    backfill_rest = airflow.wait_for_runs(second, RUN_TIMEOUT)

    backfills = sorted(backfill_cli + backfill_rest, key=lambda run: run["logical_date"])
    assert [run["logical_date"][:10] for run in backfills] == [f"2026-11-{day}" for day in range(10, 16)]
    for run in backfills:
        assert run["data_interval_end"] == run["logical_date"]  # as of D 00:00: the candles closed before D
        assert_point_in_time(airflow, run, PAIRS, {})
    assert airflow.runs("scheduled") == []

    # Every component stayed up; the concurrency bounds held across all the runs at once.
    assert {part["status"] for name, part in airflow.health().items() if isinstance(part, dict)} == {"healthy"}
    every_ti = [ti for run in manual + backfills for ti in airflow.task_instances(run["dag_run_id"])]
    assert concurrency(every_ti) <= PARALLELISM
    assert concurrency(every_ti, "refresh") <= pool_slots()[EXCHANGE_POOL][0]
    # Mapped task instances are labelled by their pairs (and a backtest by its strategy).
    assert {ti["rendered_map_index"] for ti in every_ti if ti["task_id"] == "refresh"} == set(PAIRS)
    assert {ti["rendered_map_index"] for ti in every_ti if ti["task_id"] == "backtest"} == {
        f"sma_trend {pair}" for pair in PAIRS
    }

    # rank's log: the leaderboard once, as one entry outside the collapsed groups.
    events = [json.loads(line)["event"] for line in airflow.task_log(backfills[0]["dag_run_id"], "rank").splitlines()]
    boards = [i for i, event in enumerate(events) if event.startswith("# Leaderboard")]
    assert len(boards) == 1
    opened = [event for event in events[: boards[0]] if event.startswith(("::group::", "::endgroup::"))]
    assert opened and opened[-1] == "::endgroup::"  # every group before it is closed
