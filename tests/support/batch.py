"""The daily DAG in batch mode against moto's AWS Batch: what tests/test_dag_batch.py and
tests/test_infra.py (the DAG on the CloudFormation stack's outputs) share."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from unittest import mock

from backtest_airflow.jobs import job_pairs
from backtest_airflow.layout import DAG_ID, strategy_results_url
from backtest_airflow.planning import RunPlan
from tests.support.dag import load_daily_dag, planned_run

PAIRS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
CONF = {"pairs": PAIRS, "lookback_days": 30}
LOGICAL_DATE = datetime(2026, 10, 1, tzinfo=UTC)
CONN_ID = "aws_moto"
POLL_SECONDS = 1
# The stack's job definition RetryStrategy (infra/backtest-stack.yaml), as the Batch API spells it.
RETRY_STRATEGY = {
    "attempts": 3,
    "evaluateOnExit": [
        {"action": "RETRY", "onStatusReason": "Host EC2*"},
        {"action": "RETRY", "onStatusReason": "Your Spot Task was interrupted*"},
        {"action": "RETRY", "onExitCode": "4"},
        {"action": "EXIT", "onExitCode": "*"},
    ],
}


@dataclass(frozen=True)
class Batch:
    client: object
    queue: str
    queue_arn: str
    job_definition: str
    job_definition_arn: str


@contextmanager
def moto_batch_without_docker(endpoint: str) -> Iterator[None]:
    """moto's Batch runs no container: a submitted job just ends SUCCEEDED (or FAILED with
    MOTO_SIMPLE_BATCH_FAIL_AFTER=0), inside the SubmitJob call. Its setting restored after the block."""

    def config(body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        request = urllib.request.Request(f"{endpoint}/moto-api/config", data, headers, method="POST" if data else "GET")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    saved = config()
    config({"batch": {"use_docker": False}})
    try:
        yield
    finally:
        config({"batch": saved["batch"]})


def create_batch(endpoint: str) -> Batch:
    """A Fargate compute environment, job queue and job definition (with the stack's retry
    strategy) on moto's Batch at `endpoint`, each named afresh."""
    import boto3

    suffix = uuid.uuid4().hex[:8]
    iam = boto3.client("iam", endpoint_url=endpoint)
    ec2 = boto3.client("ec2", endpoint_url=endpoint)
    client = boto3.client("batch", endpoint_url=endpoint)
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "batch.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    role = iam.create_role(RoleName=f"batch-{suffix}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    in_vpc = [{"Name": "vpc-id", "Values": [vpc["VpcId"]]}]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=in_vpc)["Subnets"]]
    groups = [g["GroupId"] for g in ec2.describe_security_groups(Filters=in_vpc)["SecurityGroups"]]
    environment = client.create_compute_environment(
        computeEnvironmentName=f"fargate-{suffix}",
        type="MANAGED",
        state="ENABLED",
        computeResources={"type": "FARGATE", "maxvCpus": 16, "subnets": subnets, "securityGroupIds": groups},
        serviceRole=role,
    )["computeEnvironmentArn"]
    queue = f"backtest-{suffix}"
    queue_arn = client.create_job_queue(
        jobQueueName=queue,
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
    )["jobQueueArn"]
    definition = f"backtest-{suffix}"
    definition_arn = client.register_job_definition(
        jobDefinitionName=definition,
        type="container",
        platformCapabilities=["FARGATE"],
        retryStrategy=RETRY_STRATEGY,
        containerProperties={
            "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/crypto-backtest:latest",
            "command": ["--help"],
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "2048"}],
            "executionRoleArn": role,
            "networkConfiguration": {"assignPublicIp": "ENABLED"},
            "fargatePlatformConfiguration": {"platformVersion": "LATEST"},
        },
    )["jobDefinitionArn"]
    return Batch(client, queue, queue_arn, definition, definition_arn)


@dataclass
class HeldJobs:
    """Jobs moto's docker-less Batch keeps live (see `jobs_held`), by id, and the SubmitJob
    requests moto's server got (their JSON bodies), in order."""

    status: str = "RUNNING"
    jobs: dict = field(default_factory=dict)
    submitted: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def finish(self, job_id: str, exit_code: int = 0) -> None:
        """End a held job as its container would: SUCCEEDED on exit 0, else FAILED; the exit code in
        its attempt, where Batch reports it."""
        job = self.jobs[job_id]
        job.exit_code = exit_code
        if job.latest_attempt:
            job.latest_attempt["container"]["exitCode"] = exit_code
        job._mark_stopped(success=exit_code == 0)

    def wait_for(self, count: int, timeout: float = 60) -> list[str]:
        """Until `count` jobs are held; their ids, in submission order."""
        deadline = time.monotonic() + timeout
        while len(self.jobs) < count:
            assert time.monotonic() < deadline, f"{len(self.jobs)} of {count} jobs submitted after {timeout}s"
            time.sleep(0.2)
        return list(self.jobs)


@contextmanager
def jobs_held(status: str = "RUNNING") -> Iterator[HeldJobs]:
    """Submitted jobs stay `status` (RUNNING: with an attempt started) until `HeldJobs.finish`, or
    until TerminateJob: then they end FAILED with its reason, as moto's Docker runner ends them
    (it watches `job.stop`, which TerminateJob sets). moto's models are patched in this process,
    the one its `ThreadedMotoServer` serves from."""
    from moto.batch.responses import BatchResponse
    from moto.batch_simple.models import BatchSimpleBackend

    held = HeldJobs(status)
    submit = BatchResponse.submitjob

    def record(self):
        with held.lock:
            held.submitted.append(json.loads(self.body))
        return submit(self)

    def start(self, include_start_attempt, job):
        self.backend._jobs[job.job_id] = job
        job.log_stream_name = job._stream_name
        if status == "RUNNING":
            job.job_started_at = datetime.now()
            job._start_attempt()
        job.status = status
        held.jobs[job.job_id] = job
        threading.Thread(target=watch, args=(job,), daemon=True).start()

    def watch(job) -> None:
        while not job.job_stopped:
            if job.stop:
                job._mark_stopped(success=False)
            time.sleep(0.1)

    with (
        mock.patch.object(BatchResponse, "submitjob", record),
        mock.patch.object(BatchSimpleBackend, "_mark_job_as_finished", start),
    ):
        yield held
    for job in held.jobs.values():  # none left running behind the test
        job._mark_stopped(success=False)


def jobs_named(batch: Batch, name: str) -> list[dict]:
    """Every job of that name on the queue, described, oldest first."""
    summaries = batch.client.list_jobs(jobQueue=batch.queue, filters=[{"name": "JOB_NAME", "values": [name]}])
    ids = [job["jobId"] for job in summaries["jobSummaryList"]]
    jobs = batch.client.describe_jobs(jobs=ids)["jobs"] if ids else []
    return sorted(jobs, key=lambda job: job["createdAt"])


def run_batch_dag(batch: Batch, data_url, moto_server: str, monkeypatch, conf: dict = CONF):
    connection = {"conn_type": "aws", "extra": {"endpoint_url": moto_server, "region_name": "us-east-1"}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the connection leads to moto
    dag = load_daily_dag(
        BACKTEST_EXECUTOR="batch",
        BACKTEST_BATCH_JOB_QUEUE=batch.queue,
        BACKTEST_BATCH_JOB_DEFINITION=batch.job_definition,
        BACKTEST_AWS_CONN_ID=CONN_ID,
        BACKTEST_BATCH_POLL_SECONDS=str(POLL_SECONDS),
        BACKTEST_SOURCE="synthetic",
        BACKTEST_DATA_URL=str(data_url),
    )
    return dag, dag.test(logical_date=LOGICAL_DATE, run_conf=conf)


def planned(dag, dag_run, data_url, conf: dict = CONF) -> tuple[RunPlan, list[dict]]:
    """The run's plan and jobs as `planning` and `jobs` make them (what local mode would run)."""
    return planned_run(dag, dag_run, data_url, conf)


def submitted_jobs(batch: Batch) -> list[dict]:
    summaries = batch.client.list_jobs(jobQueue=batch.queue, filters=[{"name": "JOB_NAME", "values": ["*"]}])
    ids = [job["jobId"] for job in summaries["jobSummaryList"]]
    return batch.client.describe_jobs(jobs=ids)["jobs"] if ids else []


def job_identity(run_id: str, index: int) -> dict[str, str]:
    """The tags naming the backtest task instance that submits job `index` of a run."""
    return {"airflow_dag_id": DAG_ID, "airflow_run_id": run_id, "airflow_task_id": "backtest",
            "airflow_map_index": str(index)}  # fmt: skip


def environment_of(job: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in job["container"]["environment"]}


def assert_jobs_are_the_plans(batch: Batch, plan: RunPlan, jobs: list[dict], status: str) -> dict[str, dict]:
    """One Batch job per planned job, on the configured queue and definition, with the planned command."""
    described = submitted_jobs(batch)
    # up to 40 pairs x strategies: one pair a job, once per strategy
    assert len(described) == len(jobs) == len(plan.pairs) * len(plan.strategies)
    by_name = {job["jobName"]: job for job in described}
    assert sorted(by_name) == sorted(job["job_name"] for job in jobs)
    for index, job in enumerate(jobs):
        submitted = by_name[job["job_name"]]
        assert submitted["jobQueue"] == batch.queue_arn
        assert submitted["jobDefinition"] == batch.job_definition_arn
        assert submitted["status"] == status
        assert submitted["container"]["command"] == job["container_overrides"]["command"]
        ((_, strategy), *_) = job_pairs(job)  # each strategy's results in its folder of the run
        assert strategy_results_url(plan.results_url, strategy) in submitted["container"]["command"]
        planned_env = {item["name"]: item["value"] for item in job["container_overrides"]["environment"]}
        assert planned_env.items() <= environment_of(submitted).items()
        # the planned tags, and the task instance's (backtest_airflow/batch.py): map index i runs job i
        assert submitted["tags"] == {**job["tags"], **job_identity(planned_env["BACKTEST_RUN_ID"], index)}
    return by_name
