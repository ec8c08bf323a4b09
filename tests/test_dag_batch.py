"""The daily DAG in batch mode: the deferrable `BacktestBatchOperator` (backtest_airflow/batch.py, the
amazon provider's `BatchOperator` whose jobs follow their tasks) against moto's AWS Batch on loopback.

moto's Batch without Docker (`{"batch": {"use_docker": false}}`) runs no container: a job just
ends SUCCEEDED (or FAILED with `MOTO_SIMPLE_BATCH_FAIL_AFTER=0`, which moto reads with
`os.getenv` for every job it finishes, in the process that serves the API: here the test
process, as `ThreadedMotoServer` is a thread). It ends inside the SubmitJob call, so the
operator would see it finished and never defer. To exercise the deferrable
path (the trigger polling Batch, run in-process by `dag.test`), `jobs_stay_running` keeps each
job RUNNING for a moment before moto finishes it its own way.

The operator reaches moto only through the Airflow connection `aws_moto` (its `endpoint_url`):
`AWS_ENDPOINT_URL` is unset while the DAG runs.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from backtest_airflow.jobs import job_pairs
from backtest_airflow.local.batch import LocalBatchOperator
from backtest_airflow.planning import RunPlan
from backtest_airflow.report import leaderboard
from tests.support.batch import (
    CONF,
    PAIRS,
    POLL_SECONDS,
    Batch,
    assert_jobs_are_the_plans,
    create_batch,
    moto_batch_without_docker,
    planned,
    run_batch_dag,
)
from tests.support.strategies import RANGE_POSITION, drop

RUNNING_SECONDS = 1.0
LEADERBOARD_FILES = ("leaderboard.parquet", "leaderboard.csv", "leaderboard.md")


@pytest.fixture
def batch(moto_server) -> Batch:
    """A Fargate compute environment, job queue and job definition on moto's docker-less Batch."""
    batch = create_batch(moto_server)
    with moto_batch_without_docker(moto_server):
        yield batch


@pytest.fixture
def jobs_stay_running(monkeypatch):
    """Submitted jobs are RUNNING for RUNNING_SECONDS, then end as moto's simple Batch decides."""
    from moto.batch_simple.models import BatchSimpleBackend

    finish = BatchSimpleBackend._mark_job_as_finished
    timers: list[threading.Timer] = []

    def start(self, include_start_attempt, job):
        self.backend._jobs[job.job_id] = job
        job.status = "RUNNING"
        timer = threading.Timer(RUNNING_SECONDS, finish, args=(self, include_start_attempt, job))
        timer.start()
        timers.append(timer)

    monkeypatch.setattr(BatchSimpleBackend, "_mark_job_as_finished", start)
    yield
    for timer in timers:
        timer.join(timeout=30)


@pytest.fixture
def inline_triggers(monkeypatch) -> list:
    """(trigger, event) of every trigger `dag.test` runs in-process, i.e. of every deferral."""
    import airflow.sdk.definitions.dag as dag_module

    run_trigger = dag_module._run_inline_trigger
    runs: list = []

    def spy(trigger, ti):
        event = run_trigger(trigger, ti)
        runs.append((trigger, event))
        return event

    monkeypatch.setattr(dag_module, "_run_inline_trigger", spy)
    return runs


def task_states(dag_run) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}


def read_leaderboard(plan: RunPlan) -> pd.DataFrame:
    folder = Path(plan.results_url)
    assert sorted(path.name for path in folder.glob("leaderboard.*")) == sorted(LEADERBOARD_FILES)
    return pd.read_parquet(folder / "leaderboard.parquet")


@pytest.mark.slow
def test_batch_mode_submits_the_planned_jobs_and_ranks_what_they_leave(
    airflow_db, moto_server, batch, jobs_stay_running, inline_triggers, tmp_path, monkeypatch
):
    data_url = tmp_path / "store"
    dag, dag_run = run_batch_dag(batch, data_url, moto_server, monkeypatch)
    plan, jobs = planned(dag, dag_run, data_url)

    # Every backtest task deferred; its trigger polled Batch through the connection until SUCCEEDED.
    assert [type(trigger).__name__ for trigger, _ in inline_triggers] == ["BacktestBatchJobTrigger"] * len(PAIRS)
    assert {trigger.waiter_delay for trigger, _ in inline_triggers} == {POLL_SECONDS}
    assert [event.payload["status"] for _, event in inline_triggers] == ["success"] * len(PAIRS)
    states = task_states(dag_run)
    assert [states["backtest", i] for i in range(len(PAIRS))] == ["success"] * len(PAIRS)
    assert [states["refresh", i] for i in range(len(PAIRS))] == ["success"] * len(PAIRS)

    by_name = assert_jobs_are_the_plans(batch, plan, jobs, "SUCCEEDED")

    # moto ran no container, so no result: every pair is listed as failed and the run fails.
    board = read_leaderboard(plan)
    assert sorted(board["symbol"]) == sorted(PAIRS)
    assert (board["status"] == "failed: no result").all()
    assert states["rank", -1] == "failed"
    assert dag_run.state == "failed"

    # Parity: the submitted container command, run by local mode's runner, leaves the result
    # where the plan expects it, and rank would pick it up.
    job = by_name[jobs[0]["job_name"]]
    overrides = {"command": job["container"]["command"], "environment": job["container"]["environment"]}
    LocalBatchOperator(task_id="parity", job_name=job["jobName"], container_overrides=overrides).execute({})
    symbol = PAIRS[0]
    result = json.loads((Path(plan.results_url) / "strategy=sma_trend" / f"{symbol}.json").read_text())
    assert (result["symbol"], result["start"], result["end"]) == (symbol, plan.start, plan.end)
    assert result["last_bar"] == "2026-09-30T23:00:00Z" and result["bars"] == 30 * 24
    rebuilt = leaderboard.build(plan, {}).set_index("symbol")["status"]
    assert rebuilt.to_dict() == {symbol: "ok", **dict.fromkeys(PAIRS[1:], "failed: no result")}


@pytest.mark.slow
@pytest.mark.parametrize("ends", ["inside SubmitJob", "while deferred"])
def test_failed_batch_jobs_fail_their_tasks_and_the_run_after_the_leaderboard(
    airflow_db, moto_server, batch, inline_triggers, tmp_path, monkeypatch, request, ends
):
    if ends == "while deferred":
        request.getfixturevalue("jobs_stay_running")
    monkeypatch.setenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", "0")  # read by moto's server thread per job
    data_url = tmp_path / "store"
    dag, dag_run = run_batch_dag(batch, data_url, moto_server, monkeypatch)
    plan, jobs = planned(dag, dag_run, data_url)

    if ends == "while deferred":
        assert [event.payload["status"] for _, event in inline_triggers] == ["error"] * len(PAIRS)
    else:
        assert inline_triggers == []  # the operator saw FAILED right after submitting
    states = task_states(dag_run)
    assert [states["backtest", i] for i in range(len(PAIRS))] == ["failed"] * len(PAIRS)
    assert_jobs_are_the_plans(batch, plan, jobs, "FAILED")

    board = read_leaderboard(plan)
    assert sorted(board["symbol"]) == sorted(PAIRS)
    assert (board["status"] == "failed: backtest task failed").all()
    assert board["rank"].isna().all()
    assert states["rank", -1] == "failed"
    assert dag_run.state == "failed"


@pytest.mark.slow
def test_batch_mode_submits_a_users_strategy_with_the_command_local_mode_runs(
    airflow_db, moto_server, batch, tmp_path, monkeypatch, strategy_folder
):
    """A user's strategy module beside a built-in: its jobs go to Batch with the command the local
    runner runs (the image's entrypoint, `python -m backtest`, and the same arguments), which
    writes its results into the strategy's folder of the run."""
    drop(strategy_folder, "range_position", RANGE_POSITION)
    strategies = [{"name": "sma_trend", "params": {}}, {"name": "range_position", "params": {"level": "0.5,0.7"}}]
    conf = {**CONF, "strategies": strategies}
    data_url = tmp_path / "store"
    dag, dag_run = run_batch_dag(batch, data_url, moto_server, monkeypatch, conf)
    plan, jobs = planned(dag, dag_run, data_url, conf)

    by_name = assert_jobs_are_the_plans(batch, plan, jobs, "SUCCEEDED")
    assert [job["tags"]["strategy"] for job in jobs] == ["sma_trend", "range_position"] * len(PAIRS)
    states = task_states(dag_run)
    assert [states["backtest", i] for i in range(len(jobs))] == ["success"] * len(jobs)
    assert sorted(i for task, i in states if task == "refresh") == list(range(len(PAIRS)))  # per chunk only

    folder = Path(plan.results_url) / "strategy=range_position"
    for job in jobs[1::2]:  # the user's strategy's jobs, as Batch got them (the planned ones), run locally
        submitted = by_name[job["job_name"]]["container"]
        overrides = {"command": submitted["command"], "environment": submitted["environment"]}
        LocalBatchOperator(task_id="parity", job_name=job["job_name"], container_overrides=overrides).execute({})
        ((symbol, _),) = job_pairs(job)
        result = json.loads((folder / f"{symbol}.json").read_text())
        assert (result["symbol"], result["strategy"]) == (symbol, "range_position")
        assert (result["start"], result["end"]) == (plan.start, plan.end)
        assert result["grid"]["combinations"] == 2 and result["bars"] == 30 * 24
        assert [row["params"]["level"] for row in result["sweep"]] == [0.5, 0.7]
        record = json.loads((folder / "_jobs" / f"{job['job_name']}.json").read_text())
        assert record["symbols"] == [symbol] and record["failed"] == []
    assert sorted(path.name for path in folder.glob("*.json")) == sorted(f"{pair}.json" for pair in PAIRS)


@pytest.mark.slow
def test_batch_mode_submits_walk_forward_commands_that_run_as_local_mode_runs_them(
    airflow_db, moto_server, batch, tmp_path, monkeypatch
):
    """walk_forward set: every job Batch gets carries --walk-forward (with --select-by); run by the
    local runner, the submitted command leaves the stitched result and curve, which rank ranks on."""
    strategies = [{"name": "sma_cross", "params": {"fast": "6h,12h", "slow": "1d,2d"}}, {"name": "sma_trend"}]
    conf = {**CONF, "strategies": strategies, "window": "1d", "lookback_days": 30, "walk_forward": "10d:5d",
            "rank_by": "sharpe"}  # fmt: skip
    data_url = tmp_path / "store"
    dag, dag_run = run_batch_dag(batch, data_url, moto_server, monkeypatch, conf)
    plan, jobs = planned(dag, dag_run, data_url, conf)
    assert (plan.walk_forward, plan.rank_on) == ("10d:5d", "out_of_sample")

    by_name = assert_jobs_are_the_plans(batch, plan, jobs, "SUCCEEDED")
    states = task_states(dag_run)
    assert [states["backtest", i] for i in range(len(jobs))] == ["success"] * len(jobs)
    for job in jobs:
        command = by_name[job["job_name"]]["container"]["command"]
        at = command.index("--walk-forward")
        assert command[at : at + 4] == ["--walk-forward", "10d:5d", "--select-by", "sharpe"]

    for job in jobs:  # every submitted command, run by local mode's runner
        submitted = by_name[job["job_name"]]["container"]
        overrides = {"command": submitted["command"], "environment": submitted["environment"]}
        LocalBatchOperator(task_id="parity", job_name=job["job_name"], container_overrides=overrides).execute({})
        ((symbol, name),) = job_pairs(job)
        folder = Path(plan.results_url) / f"strategy={name}"
        result = json.loads((folder / f"{symbol}.json").read_text())
        walk = result["walk_forward"]
        assert (result["start"], result["end"]) == (plan.start, plan.end)
        assert [fold["test_start"] for fold in walk["folds"]] == [
            "2026-09-11T00:00:00Z", "2026-09-16T00:00:00Z", "2026-09-21T00:00:00Z", "2026-09-26T00:00:00Z"
        ]  # fmt: skip
        assert result["oos"] == walk["stitched"] and walk["stitched"]["bars"] == 20 * 24
        equity = pq.read_table(folder / f"{symbol}.equity.parquet")
        assert equity.column("fold").to_pylist() == [k for k in range(4) for _ in range(5 * 24)]
    board = leaderboard.build(plan, {}, grid=False)
    assert (board["status"] == "ok").all() and board["rank"].tolist() == list(range(1, len(jobs) + 1))
    assert board["oos_sharpe"].tolist() == sorted(board["oos_sharpe"], reverse=True)
    assert (board["wf_folds"] == 4).all()
