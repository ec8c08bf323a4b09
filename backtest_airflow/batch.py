"""Batch jobs that follow their backtest tasks (batch mode; `local/batch.py` is the local stand-in).

The amazon provider's `BatchOperator` submits a new job at every try of a task and leaves the job
running when the task is marked or its run stopped while deferred (its trigger has no `on_kill`).
`BacktestBatchOperator` instead:

- tags each job with the task instance it runs for (dag, run, task, map index);
- at every try first looks for that task instance's earlier jobs (ListJobs by the job's name on the
  queue, DescribeJobs, the tags): re-attaches to a live one, takes the result of one that
  SUCCEEDED, or submits a new one with only the attempts left of `MAX_RUNS` for the chunk in all,
  counted from the earlier jobs' attempts (and refuses once they are spent);
- defers to `BacktestBatchJobTrigger`, whose `on_kill` (the triggerer calls it when a user marks
  the task failed or success, or stops its run, or clears it) terminates the job with a reason
  naming the run, unless the task instance is about to run again (cleared): its next try then
  re-attaches to the job;
- on its execution timeout (`execution_timeout`) terminates the job and fails for good.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.operators.batch import BatchOperator
from airflow.providers.amazon.aws.triggers.batch import BatchJobTrigger
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from botocore.exceptions import ClientError

from backtest.errors import PERMANENT_EXIT_CODES

MAX_RUNS = 3  # attempts of one chunk's job in all: Batch's and Airflow's retries together
QUEUE_SECONDS = 1800  # on top of MAX_RUNS attempts' timeouts: waiting RUNNABLE for capacity
LIVE = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
# The task instance's state when on_kill runs, if a next try comes (cleared, or retrying).
RUNS_AGAIN = (None, "scheduled", "queued", "running", "restarting", "up_for_retry", "deferred")
_MISSING = "missing"
_KILLS: set[asyncio.Future] = set()  # on_kill's work under way (a reference keeps a task alive)
_TAG_TEXT = re.compile(r"[^\w .:/=+\-@]")  # what an AWS tag value may hold


def execution_timeout(job_timeout_seconds: int) -> timedelta:
    """The backtest task's execution timeout: every attempt it may use, plus time in the queue."""
    return timedelta(seconds=MAX_RUNS * job_timeout_seconds + QUEUE_SECONDS)


def retry_strategy(definition: dict | None, attempts_left: int) -> dict:
    """SubmitJob's `retryStrategy`: the job definition's rules (`evaluateOnExit`) with at most
    `attempts_left` attempts. An override replaces the definition's strategy whole, so its rules
    go along; without it a resubmitted job would get the definition's attempts again."""
    strategy = dict(definition or {})
    strategy["attempts"] = max(1, min(attempts_left, strategy.get("attempts") or 1))
    return strategy


def attempts_spent(jobs: list[dict]) -> int:
    """Attempts the task instance's ended jobs used (a job stopped before it started used none)."""
    return sum(len(job.get("attempts") or []) for job in jobs if job["status"] not in LIVE)


def task_label(task_id: str, map_index: int) -> str:
    return f"{task_id}[{map_index}]" if map_index >= 0 else task_id


def why_stopped(state: str | None) -> str:
    """How a task's state, read when its trigger was cancelled, reads in a TerminateJob reason."""
    if state == "success":
        return "was marked success"
    if state == "failed":
        return "was marked failed (or its run was stopped)"
    if state == _MISSING:
        return "was stopped (the task instance is gone, or its state could not be read)"
    return f"was stopped ({state})"


def job_failure(job: dict) -> AirflowException:
    """The task's exception for a FAILED job: for good when the job says a retry cannot help."""
    attempts = job.get("attempts") or []
    code = (job.get("container") or {}).get("exitCode")
    if code is None and attempts:
        code = (attempts[-1].get("container") or {}).get("exitCode")
    message = (
        f"Batch job {job['jobName']} ({job['jobId']}) FAILED after {len(attempts)} attempt(s): "
        f"{job.get('statusReason') or 'no reason given'} (exit code {code})"
    )
    error = AirflowFailException if code in PERMANENT_EXIT_CODES else AirflowException
    return error(message)


class BacktestBatchJobTrigger(BatchJobTrigger):
    """`BatchJobTrigger` that knows its task instance, and terminates its job on a user's action."""

    def __init__(self, *, job_id: str, dag_id: str, run_id: str, task_id: str, map_index: int, **kwargs: Any):
        super().__init__(job_id=job_id, **kwargs)
        self.job_id, self.dag_id, self.run_id, self.task_id, self.map_index = job_id, dag_id, run_id, task_id, map_index
        self.serialized_fields.update(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index)

    async def task_state(self) -> str | None:
        """The task instance's state now, asked of the API server through the triggerer's supervisor;
        `_MISSING` when it is gone or cannot be asked (then the job is terminated)."""
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.comms import GetTaskStates

        try:
            message = GetTaskStates(
                dag_id=self.dag_id, task_ids=[self.task_id], run_ids=[self.run_id], map_index=self.map_index
            )
            response = await asyncio.wait_for(task_runner.SUPERVISOR_COMMS.asend(message), timeout=10)
            states = response.task_states.get(self.run_id, {})
        except Exception as exc:
            self.log.warning("cannot read the state of %s: %s", task_label(self.task_id, self.map_index), exc)
            return _MISSING
        key = f"{self.task_id}_{self.map_index}" if self.map_index >= 0 else self.task_id
        return states.get(key, _MISSING)

    async def on_kill(self) -> None:
        """Terminate the job, unless the task runs again (cleared): that try re-attaches to it.

        The triggerer cancels a cancelled trigger again at every sync with its supervisor (about
        each second) until it ends, on_kill included: the work runs shielded, in a task of its own."""
        work = asyncio.ensure_future(self.terminate_unless_cleared())
        _KILLS.add(work)
        work.add_done_callback(_KILLS.discard)
        await asyncio.shield(work)

    async def terminate_unless_cleared(self) -> None:
        label = task_label(self.task_id, self.map_index)
        state = await self.task_state()
        if state in RUNS_AGAIN:
            self.log.info("%s runs again (%s): it re-attaches to job %s, left running", label, state, self.job_id)
            return
        reason = f"Airflow task {label} of run {self.run_id} {why_stopped(state)}"
        hook = self.hook()
        async with await hook.get_async_conn() as client:
            await client.terminate_job(jobId=self.job_id, reason=reason)
        self.log.info("terminated Batch job %s: %s", self.job_id, reason)


class BacktestBatchOperator(BatchOperator):
    """`BatchOperator` whose job follows its task (see module docstring). Deferrable only."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("deferrable", True)
        super().__init__(**kwargs)
        self.identity: dict[str, str] = {}  # tags naming the task instance, set at execute
        self.ti_key: tuple[str, str, str, int] = ("", "", "", -1)  # (dag, run, task, map index)

    def follow(self, context: Any) -> None:
        ti = context["ti"]
        self.ti_key = (ti.dag_id, context["run_id"], ti.task_id, ti.map_index)
        self.identity = _identity(*self.ti_key)

    @property
    def label(self) -> str:
        return f"task {task_label(self.ti_key[2], self.ti_key[3])} of run {self.ti_key[1]}"

    def execute(self, context: Any) -> str:
        self.follow(context)
        earlier = self.earlier_jobs()
        live = [job for job in earlier if job["status"] in LIVE]
        done = [job for job in earlier if job["status"] == "SUCCEEDED"]
        if live:
            self.job_id = live[0]["jobId"]
            self.log.info("re-attaching to job %s (%s) of an earlier try", self.job_id, live[0]["status"])
        elif done:
            self.job_id = done[0]["jobId"]
            self.log.info("took the result of job %s, which SUCCEEDED in an earlier try", self.job_id)
            return self.job_id
        else:
            self.submit_within_budget(context, earlier)
        job = self._persist_links(context)
        if job["status"] == "SUCCEEDED":
            return self.job_id
        if job["status"] == "FAILED":
            raise job_failure(job)
        self.defer(timeout=self.execution_timeout, trigger=self.trigger(), method_name="execute_complete")
        raise AssertionError("unreachable: defer raises")

    def submit_within_budget(self, context: Any, earlier: list[dict]) -> None:
        spent = attempts_spent(earlier)
        if spent >= MAX_RUNS:
            names = ", ".join(job["jobId"] for job in earlier)
            raise AirflowFailException(
                f"{self.label}: its jobs ({names}) already used {spent} attempt(s), at most {MAX_RUNS} in all "
                "for one run; not submitting another (trigger a new run to backtest it again)"
            )
        rules = self.definition_retry_strategy(earlier)
        if rules is not None or spent:  # unknown rules: the definition's, unless attempts were spent
            self.retry_strategy = retry_strategy(rules, MAX_RUNS - spent)
        self.tags = {**(self.tags or {}), **self.identity}
        self.log.info("submitting job %s: %s attempt(s) left of %s", self.job_name, MAX_RUNS - spent, MAX_RUNS)
        self.submit_job(context)

    def earlier_jobs(self) -> list[dict]:
        """This task instance's jobs on the queue (its job name, its identity tags), newest first."""
        client = self.hook.client
        ids = []
        pages = client.get_paginator("list_jobs").paginate(
            jobQueue=self.job_queue, filters=[{"name": "JOB_NAME", "values": [self.job_name]}]
        )
        for page in pages:
            ids += [summary["jobId"] for summary in page["jobSummaryList"]]
        jobs = [job for at in range(0, len(ids), 100) for job in client.describe_jobs(jobs=ids[at : at + 100])["jobs"]]
        mine = [job for job in jobs if self.identity.items() <= (job.get("tags") or {}).items()]
        return sorted(mine, key=lambda job: job.get("createdAt", 0), reverse=True)

    def definition_retry_strategy(self, earlier: list[dict]) -> dict | None:
        """The retry rules jobs of this definition get: an earlier job's (DescribeJobs shows them),
        else the job definition's (its latest ACTIVE revision unless one is named); None when
        DescribeJobDefinitions is not allowed (then the definition's own strategy applies)."""
        if found := next((job["retryStrategy"] for job in earlier if job.get("retryStrategy")), None):
            return found
        client, name = self.hook.client, self.job_definition
        try:
            if ":" in name:  # an ARN, or name:revision
                found = client.describe_job_definitions(jobDefinitions=[name])["jobDefinitions"]
            else:
                found = client.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")["jobDefinitions"]
        except ClientError as exc:
            self.log.warning("cannot read job definition %s's retry strategy: %s", name, exc)
            return None
        return max(found, key=lambda d: d.get("revision", 0)).get("retryStrategy") if found else None

    def trigger(self) -> BacktestBatchJobTrigger:
        dag_id, run_id, task_id, map_index = self.ti_key
        return BacktestBatchJobTrigger(
            job_id=self.job_id,
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            map_index=map_index,
            waiter_max_attempts=self.max_retries,
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            waiter_delay=self.poll_interval,
            verify=self.verify,
            botocore_config=self.botocore_config,
        )

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> str:
        """The trigger's verdict, checked against the job itself (the trigger may have lost track)."""
        self.job_id = (event or {}).get("job_id") or self.job_id
        job = self.hook.get_job_description(job_id=self.job_id)
        self._persist_cloudwatch_link(context)
        if job["status"] == "SUCCEEDED":
            self.log.info("Batch job %s SUCCEEDED", self.job_id)
            return self.job_id
        if job["status"] == "FAILED":
            raise job_failure(job)
        raise AirflowException(f"lost track of Batch job {self.job_id} ({job['status']}): {event}; a retry re-attaches")

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any):
        """On the execution timeout (deferred: the trigger is not told), terminate the job and fail."""
        if (
            next_method == TRIGGER_FAIL_REPR
            and (next_kwargs or {}).get("error") == TriggerFailureReason.TRIGGER_TIMEOUT
        ):
            self.follow(context)
            reason = f"Airflow {self.label} timed out after {self.execution_timeout}"
            live = [job for job in self.earlier_jobs() if job["status"] in LIVE]
            for job in live:
                self.hook.client.terminate_job(jobId=job["jobId"], reason=reason)
            states = ", ".join(f"{job['jobId']} {job['status']}" for job in live) or "no live job"
            raise AirflowFailException(
                f"{reason} (execution_timeout: {MAX_RUNS} attempts of the job timeout plus {QUEUE_SECONDS}s "
                f"in the queue); terminated: {states}. A job still RUNNABLE found no capacity (Spot?)."
            )
        return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        """The worker's kill (its execution timeout, or a user's action before the task deferred)."""
        if not self.job_id:
            return
        reason = f"Airflow {self.label} was killed (timed out, or stopped before it deferred)"
        response = self.hook.client.terminate_job(jobId=self.job_id, reason=reason)
        self.log.info("terminated Batch job %s: %s (%s)", self.job_id, reason, response)


def _identity(dag_id: str, run_id: str, task_id: str, map_index: int) -> dict[str, str]:
    """The tags that say which task instance a job runs for (the same at every try)."""
    return {
        "airflow_dag_id": _TAG_TEXT.sub("_", dag_id)[:256],
        "airflow_run_id": _TAG_TEXT.sub("_", run_id)[:256],
        "airflow_task_id": _TAG_TEXT.sub("_", task_id)[:256],
        "airflow_map_index": str(map_index),
    }
