"""Batch jobs follow their backtest tasks (backtest_airflow/batch.py), against moto's Batch on loopback.

A one-task DAG maps `BacktestBatchOperator` over one job, run by `dag.test()` (real Airflow, the
trigger run in-process). `dag.test()` of the same logical date replaces the run by one of the same
run id, so its task instance is the same (dag, run, task, map index): what an earlier try left on
the queue — a job submitted here through the Batch API with that task instance's tags — is what
the operator must find. moto's docker-less Batch keeps jobs live while `jobs_held` holds them.
The last test does the same on a real `make airflow` stack: mark failed and clear through the
REST API, the triggerer calling the trigger's `on_kill`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass

import pytest

from backtest_airflow import tasks
from backtest_airflow.batch import (
    MAX_RUNS,
    BacktestBatchJobTrigger,
    BacktestBatchOperator,
    execution_timeout,
    job_failure,
)
from backtest_airflow.jobs import job_name
from backtest_airflow.layout import DAG_ID
from backtest_airflow.settings import load_settings
from tests.support import environment
from tests.support.batch import (
    CONN_ID,
    LOGICAL_DATE,
    POLL_SECONDS,
    RETRY_STRATEGY,
    HeldJobs,
    create_batch,
    jobs_held,
    jobs_named,
    moto_batch_without_docker,
)
from tests.support.dag import load_daily_dag

RUN_ID = "manual__2026-10-01T00:00:00+00:00"  # dag.test's run of LOGICAL_DATE
CONF = {"pairs": ["BTCUSDT"], "lookback_days": 30}
IDENTITY = {"airflow_dag_id": DAG_ID, "airflow_run_id": RUN_ID, "airflow_task_id": "backtest", "airflow_map_index": "0"}
JOB = {  # the run's one job, as `jobs.job_kwargs` names and tags it
    "job_name": job_name(["BTCUSDT"], "sma_trend", LOGICAL_DATE, RUN_ID),
    "container_overrides": {"command": ["run", "--symbol", "BTCUSDT"]},
    "tags": {"pairs": "BTCUSDT", "strategy": "sma_trend"},
}


@pytest.fixture
def batch(moto_server, monkeypatch):
    """moto's Batch without Docker; the operator reaches it through the `aws_moto` connection only."""
    connection = {"conn_type": "aws", "extra": {"endpoint_url": moto_server, "region_name": "us-east-1"}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
    batch = create_batch(moto_server)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with moto_batch_without_docker(moto_server):
        yield batch


class InlineTriggers(list):
    """The triggers `dag.test` ran in-process (each deferral's); `finish` set: the held job a trigger
    waits on SUCCEEDS a second after the trigger starts (so only once the task has deferred)."""

    finish: HeldJobs | None = None


@pytest.fixture
def inline_triggers(monkeypatch) -> InlineTriggers:
    import airflow.sdk.definitions.dag as dag_module

    run_trigger, runs = dag_module._run_inline_trigger, InlineTriggers()

    def spy(trigger, ti):
        runs.append(trigger)
        trigger.attempts = 60  # polls: a test that goes wrong fails in a minute instead of hanging
        if runs.finish is not None:
            threading.Timer(1.0, runs.finish.finish, args=(trigger.job_id,)).start()
        return run_trigger(trigger, ti)

    monkeypatch.setattr(dag_module, "_run_inline_trigger", spy)
    return runs


def run_backtest_task(batch, data_url) -> str:
    """One run of the daily DAG in batch mode for one pair (run id RUN_ID); its backtest task's state."""
    dag = load_daily_dag(
        BACKTEST_EXECUTOR="batch",
        BACKTEST_BATCH_JOB_QUEUE=batch.queue,
        BACKTEST_BATCH_JOB_DEFINITION=batch.job_definition,
        BACKTEST_AWS_CONN_ID=CONN_ID,
        BACKTEST_BATCH_POLL_SECONDS=str(POLL_SECONDS),
        BACKTEST_DATA_URL=str(data_url),
    )
    dag_run = dag.test(run_after=LOGICAL_DATE, logical_date=LOGICAL_DATE, run_conf=CONF)
    assert dag_run.run_id == RUN_ID
    (ti,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == "backtest"]
    return ti.state


def submit_earlier_job(batch, **tags) -> str:
    """The job an earlier try of the task instance left: its name, command and tags."""
    overrides = JOB["container_overrides"]
    return batch.client.submit_job(
        jobName=JOB["job_name"],
        jobQueue=batch.queue,
        jobDefinition=batch.job_definition,
        containerOverrides=overrides,
        tags={**JOB["tags"], **IDENTITY, **tags},
    )["jobId"]


def definition_strategy(batch) -> dict:
    """The job definition's retry strategy as Batch describes it: the stack's, MAX_RUNS attempts."""
    (definition,) = batch.client.describe_job_definitions(jobDefinitionName=batch.job_definition)["jobDefinitions"]
    strategy = definition["retryStrategy"]
    assert strategy["attempts"] == MAX_RUNS == RETRY_STRATEGY["attempts"]
    assert len(strategy["evaluateOnExit"]) == len(RETRY_STRATEGY["evaluateOnExit"])
    return strategy


def wait_for_status(batch, job_id: str, status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while (job := batch.client.describe_jobs(jobs=[job_id])["jobs"][0])["status"] != status:
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job


def test_the_backtest_task_times_out_after_every_attempt_and_the_queue():
    """Batch mode's options: the job timeout of each of MAX_RUNS attempts plus half an hour queued."""
    with environment(BACKTEST_EXECUTOR="batch", BACKTEST_BATCH_JOB_TIMEOUT_SECONDS="600"):
        options = tasks.backtest_options(load_settings())
    assert options["execution_timeout"] == execution_timeout(600)
    assert execution_timeout(600).total_seconds() == MAX_RUNS * 600 + 1800 == 3600
    with environment(BACKTEST_EXECUTOR="local"):
        assert "execution_timeout" not in tasks.backtest_options(load_settings())


def test_a_first_try_submits_one_job_tagged_with_its_task_instance(airflow_db, batch, tmp_path, inline_triggers):
    with jobs_held() as held:
        inline_triggers.finish = held
        assert run_backtest_task(batch, tmp_path) == "success"
    (job,) = jobs_named(batch, JOB["job_name"])
    assert job["status"] == "SUCCEEDED" and job["tags"] == {**JOB["tags"], **IDENTITY}
    (request,) = held.submitted
    assert request["retryStrategy"] == definition_strategy(batch)  # the definition's rules, MAX_RUNS attempts
    assert [type(trigger).__name__ for trigger in inline_triggers] == ["BacktestBatchJobTrigger"]


def test_a_retry_re_attaches_to_its_live_job_instead_of_submitting_another(
    airflow_db, batch, tmp_path, inline_triggers
):
    with jobs_held() as held:
        earlier = submit_earlier_job(batch)
        inline_triggers.finish = held
        assert run_backtest_task(batch, tmp_path) == "success"
    assert [job["jobId"] for job in jobs_named(batch, JOB["job_name"])] == [earlier]
    assert len(held.submitted) == 1  # the earlier try's only
    assert [trigger.job_id for trigger in inline_triggers] == [earlier]  # it waited on that job


def test_a_retry_takes_the_result_of_a_job_that_succeeded(airflow_db, batch, tmp_path, inline_triggers):
    earlier = submit_earlier_job(batch)  # moto ends it SUCCEEDED at once
    assert run_backtest_task(batch, tmp_path) == "success"
    assert [job["jobId"] for job in jobs_named(batch, JOB["job_name"])] == [earlier]
    assert inline_triggers == []  # nothing to wait for


def test_another_task_instances_job_of_the_same_name_is_not_taken(airflow_db, batch, tmp_path, inline_triggers):
    other = submit_earlier_job(batch, airflow_run_id="manual__2026-09-30T00:00:00+00:00")
    with jobs_held() as held:
        inline_triggers.finish = held
        assert run_backtest_task(batch, tmp_path) == "success"
    jobs = jobs_named(batch, JOB["job_name"])
    assert jobs[0]["jobId"] == other and len(jobs) == 2


@pytest.mark.parametrize("spent", [1, 2])
def test_a_retry_after_failed_jobs_submits_only_the_attempts_left(
    airflow_db, batch, tmp_path, monkeypatch, inline_triggers, spent
):
    monkeypatch.setenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", "0")  # earlier jobs: FAILED after one attempt
    earlier = [submit_earlier_job(batch) for _ in range(spent)]
    monkeypatch.delenv("MOTO_SIMPLE_BATCH_FAIL_AFTER")
    assert all(len(job["attempts"]) == 1 for job in batch.client.describe_jobs(jobs=earlier)["jobs"])
    with jobs_held() as held:
        inline_triggers.finish = held
        assert run_backtest_task(batch, tmp_path) == "success"
    jobs = jobs_named(batch, JOB["job_name"])
    assert [job["status"] for job in jobs] == ["FAILED"] * spent + ["SUCCEEDED"]
    request = held.submitted[-1]
    assert request["retryStrategy"] == {**definition_strategy(batch), "attempts": MAX_RUNS - spent}


def test_a_retry_refuses_once_the_chunk_used_3_attempts_in_all(airflow_db, batch, tmp_path, monkeypatch):
    monkeypatch.setenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", "0")
    earlier = [submit_earlier_job(batch) for _ in range(MAX_RUNS)]
    assert run_backtest_task(batch, tmp_path) == "failed"
    assert [job["jobId"] for job in jobs_named(batch, JOB["job_name"])] == earlier  # no 4th job


def test_the_triggers_on_kill_terminates_its_job_naming_the_run(batch):
    """The trigger as the triggerer rebuilds it (from its serialized kwargs); with no task API to
    ask (not in a triggerer), it cannot tell a clear from a mark, and terminates."""
    from airflow.sdk.module_loading import import_string

    with jobs_held() as held:
        job_id = submit_earlier_job(batch)
        trigger = BacktestBatchJobTrigger(
            job_id=job_id, dag_id=DAG_ID, run_id=RUN_ID, task_id="backtest", map_index=3, aws_conn_id=CONN_ID
        )
        classpath, kwargs = trigger.serialize()
        assert classpath == "backtest_airflow.batch.BacktestBatchJobTrigger"
        rebuilt = import_string(classpath)(**kwargs)
        assert (rebuilt.job_id, rebuilt.run_id, rebuilt.map_index) == (job_id, RUN_ID, 3)
        asyncio.run(rebuilt.on_kill())
        job = wait_for_status(batch, job_id, "FAILED")
        assert job["statusReason"].startswith(f"Airflow task backtest[3] of run {RUN_ID} was stopped")
        assert held.jobs[job_id].stop


def test_a_timed_out_task_terminates_its_job_and_fails_for_good(batch):
    """The execution timeout of a deferred task: the scheduler resumes it with `__fail__`."""
    from types import SimpleNamespace

    from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
    from airflow.sdk.exceptions import AirflowFailException

    with jobs_held(status="RUNNABLE"):  # no capacity: a Spot queue
        job_id = submit_earlier_job(batch)
        operator = BacktestBatchOperator(
            task_id="backtest", aws_conn_id=CONN_ID, job_queue=batch.queue, job_definition=batch.job_definition,
            execution_timeout=execution_timeout(60), **JOB,
        )  # fmt: skip
        context = {"ti": SimpleNamespace(dag_id=DAG_ID, task_id="backtest", map_index=0), "run_id": RUN_ID}
        with pytest.raises(AirflowFailException, match=f"{job_id} RUNNABLE.*no capacity"):
            operator.resume_execution(TRIGGER_FAIL_REPR, {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, context)
        job = wait_for_status(batch, job_id, "FAILED")
    assert job["statusReason"] == f"Airflow task backtest[0] of run {RUN_ID} timed out after 0:33:00"


LIVE_CONF = {"pairs": ["BTCUSDT", "ETHUSDT"], "lookback_days": 20}


def wait_until(what: str, check, timeout: float = 300, every: float = 1.0):
    """`check()`'s first truthy value, polled; fail saying `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s"
        time.sleep(every)
    return value


@pytest.mark.slow
def test_under_make_airflow_a_marked_task_terminates_its_job_and_a_cleared_one_re_attaches(
    moto_server, batch, tmp_path
):
    """`make airflow` in batch mode against moto: backtest[0] marked failed through the REST API while
    deferred -> the triggerer's on_kill terminates its job (read back from moto); backtest[1] cleared
    -> its next try re-attaches to its still-running job (one job of that name on the queue)."""
    from tests.support import free_port
    from tests.support.live_airflow import LiveAirflow, quote

    connection = {"conn_type": "aws", "extra": {"endpoint_url": moto_server, "region_name": "us-east-1"}}
    settings = {
        "BACKTEST_EXECUTOR": "batch",
        "BACKTEST_BATCH_JOB_QUEUE": batch.queue,
        "BACKTEST_BATCH_JOB_DEFINITION": batch.job_definition,
        "BACKTEST_AWS_CONN_ID": CONN_ID,
        "BACKTEST_BATCH_POLL_SECONDS": str(POLL_SECONDS),
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(connection),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    }
    started = time.monotonic()
    with jobs_held() as held, LiveAirflow(home=tmp_path / "airflow", port=free_port(), extra_env=settings) as airflow:
        airflow.unpause()
        run_id = airflow.trigger(LIVE_CONF, "2026-11-20T00:00:00Z")["dag_run_id"]
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id)}/taskInstances"

        def backtests() -> dict[int, dict]:
            return {ti["map_index"]: ti for ti in airflow.task_instances(run_id) if ti["task_id"] == "backtest"}

        wait_until("both backtests deferred", lambda: [ti["state"] for ti in backtests().values()] == ["deferred"] * 2)
        jobs = {int(job.tags["airflow_map_index"]): job for job in held_described(batch, held)}
        assert sorted(jobs) == [0, 1] and {job.status for job in jobs.values()} == {"RUNNING"}
        for index, job in jobs.items():  # the triggerer runs both triggers (a mark before that reaches no on_kill)
            log = f"{path}/backtest/logs/1?map_index={index}&full_content=true"
            wait_until(
                f"backtest[{index}]'s trigger polling",
                lambda job=job, log=log: f"{job.id} not ready yet" in json.dumps(airflow.api("GET", log)),
            )

        # Marked failed: its job is terminated with a reason naming the run.
        airflow.api("PATCH", f"{path}/backtest/0", {"new_state": "failed"})
        job = wait_for_status(batch, jobs[0].id, "FAILED", timeout=120)
        assert (
            job["statusReason"]
            == f"Airflow task backtest[0] of run {run_id} was marked failed (or its run was stopped)"
        )

        # Cleared: the next try finds the job still RUNNING and waits on it; no second job.
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": [["backtest", 1]], "only_failed": False}
        airflow.api("POST", f"/api/v2/dags/{DAG_ID}/clearTaskInstances", body)
        wait_until(
            "backtest[1]'s second try deferred",
            lambda: (ti := backtests()[1])["try_number"] == 2 and ti["state"] == "deferred",
        )
        (same,) = jobs_named(batch, jobs[1].name)
        assert (same["jobId"], same["status"], same.get("statusReason")) == (jobs[1].id, "RUNNING", None)
        assert len(held.submitted) == 2  # one SubmitJob per backtest task, none for the retry
        held.finish(jobs[1].id)
        wait_until("backtest[1] succeeded", lambda: backtests()[1]["state"] == "success")
        log = airflow.api("GET", f"{path}/backtest/logs/2?map_index=1&full_content=true")
        assert f"re-attaching to job {jobs[1].id} (RUNNING)" in json.dumps(log)
        assert backtests()[0]["state"] == "failed"
    print(f"make airflow batch-mode follow test: {time.monotonic() - started:.0f}s")


@dataclass(frozen=True)
class HeldJob:
    id: str
    name: str
    status: str
    tags: dict


def held_described(batch, held: HeldJobs) -> list[HeldJob]:
    described = batch.client.describe_jobs(jobs=list(held.jobs))["jobs"] if held.jobs else []
    return [HeldJob(job["jobId"], job["jobName"], job["status"], job["tags"]) for job in described]


@pytest.mark.parametrize(("exit_code", "for_good"), [(3, True), (5, True), (1, False), (137, False)])
def test_a_failed_job_fails_its_task_for_good_only_when_the_job_says_a_retry_cannot_help(batch, exit_code, for_good):
    """Exit 2, 3, 5 (backtest/errors.py): no Airflow retry; others: retried, within the attempts left."""
    from airflow.sdk.exceptions import AirflowFailException

    with jobs_held() as held:
        job_id = submit_earlier_job(batch)
        held.finish(job_id, exit_code)
    (job,) = batch.client.describe_jobs(jobs=[job_id])["jobs"]
    error = job_failure(job)
    assert isinstance(error, AirflowFailException) == for_good
    assert "FAILED after 1 attempt(s)" in str(error) and f"(exit code {exit_code})" in str(error)
