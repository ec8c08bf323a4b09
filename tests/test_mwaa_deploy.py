"""`infra/deploy.sh --mwaa-environment NAME --dry-run` and `infra/mwaa_bundle.py --stack NAME`: the
AWS calls they make and the ones they would make.

These tests use a MOCK: a fake `aws` executable first on PATH that records its arguments and
answers the read calls (the stack's status and outputs, the image, the MWAA environment, whether a
pool exists) with canned output, and fails on any other call. That is acceptable here only because
no local stand-in runs MWAA's API (moto's MWAA has no invoke-rest-api, and nothing here runs an
Airflow behind one); what the calls do on AWS is for a real account to show (docs/mwaa.md).
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from backtest_airflow.settings import pool_slots
from tests.support import REPO

OUTPUTS = {
    "EcrRepositoryUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/crypto-backtest",
    "DataUrl": "s3://crypto-backtest-data/data",
    "JobQueueName": "crypto-backtest",
    "JobDefinitionName": "crypto-backtest",
    "JobVcpu": "1",
    "JobMemory": "2048",
    "AlertsTopicArn": "arn:aws:sns:us-east-1:123456789012:crypto-backtest-alerts",
    "AirflowPolicyArn": "arn:aws:iam::123456789012:policy/airflow",
    "LogGroupName": "/aws/batch/crypto-backtest",
}
MWAA_BUCKET = "airflow-bucket"
EXISTING_POOL = "backtest_exchange"  # the fake says this pool exists already, no other

FAKE_AWS = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_AWS_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
outputs = json.loads(os.environ["FAKE_AWS_OUTPUTS"])
query = args[args.index("--query") + 1] if "--query" in args else ""
if "describe-stacks" in args:
    if "StackStatus" in query:
        print("UPDATE_COMPLETE")
    elif "OutputKey==" in query:
        print(outputs.get(query.split("OutputKey=='")[1].split("'")[0], "None"))  # the CLI's text for none
    else:
        print(json.dumps({{"Stacks": [{{"Outputs": [{{"OutputKey": k, "OutputValue": v}} for k, v in outputs.items()]}}]}}))
elif "describe-images" in args:
    print("{{}}")
elif "get-environment" in args and "SourceBucketArn" in query:
    print("arn:aws:s3:::{bucket}\\tdags")
elif "invoke-rest-api" in args and args[args.index("--method") + 1] == "GET":
    if args[args.index("--path") + 1] != "/pools/{pool}":
        sys.exit("An error occurred (RestApiClientException): 404 Not Found")
    print("{{}}")
else:
    sys.exit("fake aws: not a read call: " + " ".join(args))
"""


@pytest.fixture
def fake_aws(tmp_path) -> tuple[dict[str, str], Path]:
    """(an environment whose `aws` is the fake, the log of its calls: one JSON list per line)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "aws"
    script.write_text(FAKE_AWS.format(python=sys.executable, bucket=MWAA_BUCKET, pool=EXISTING_POOL))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "aws-calls.jsonl"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_AWS_LOG": str(log),
        "FAKE_AWS_OUTPUTS": json.dumps(OUTPUTS),
    }
    return env, log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def dry_run_lines(stderr: str) -> list[list[str]]:
    prefix = "deploy.sh: dry-run: "
    return [shlex.split(line.removeprefix(prefix)) for line in stderr.splitlines() if line.startswith(prefix)]


def test_the_bundle_takes_its_settings_from_the_stack_outputs(fake_aws, tmp_path):
    env, log = fake_aws
    out = tmp_path / "mwaa"
    command = [sys.executable, str(REPO / "infra" / "mwaa_bundle.py"), "--out", str(out), "--stack", "crypto-backtest"]
    done = subprocess.run([*command, "--region", "us-east-1", "--set", "BACKTEST_SOURCE=synthetic"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    describe = "cloudformation describe-stacks --stack-name crypto-backtest --output json --region us-east-1"
    assert calls(log) == [describe.split()]
    script = (out / "startup.sh").read_text()
    for line in (
        "export BACKTEST_DATA_URL=s3://crypto-backtest-data/data",
        "export BACKTEST_BATCH_JOB_QUEUE=crypto-backtest",
        "export BACKTEST_BATCH_JOB_DEFINITION=crypto-backtest",
        "export BACKTEST_JOB_VCPU=1",
        "export BACKTEST_JOB_MEMORY_MIB=2048",
        f"export BACKTEST_NOTIFY_SNS_TOPIC_ARN={OUTPUTS['AlertsTopicArn']}",
        "export BACKTEST_EXECUTOR=batch",
        "export BACKTEST_SOURCE=synthetic",  # --set wins over the default
    ):
        assert line in script.splitlines()


@pytest.mark.parametrize("named_by", ["option", "stack"])
def test_deploy_dry_run_reads_and_prints_the_mwaa_calls(fake_aws, tmp_path, named_by):
    """The environment named by --mwaa-environment, or by the stack's MwaaEnvironmentName output."""
    env, log = fake_aws
    if named_by == "stack":
        env["FAKE_AWS_OUTPUTS"] = json.dumps({**OUTPUTS, "MwaaEnvironmentName": "research"})
    named = ["--mwaa-environment", "research"] if named_by == "option" else []
    bundle = tmp_path / "mwaa"
    made = subprocess.run(
        [sys.executable, str(REPO / "infra" / "mwaa_bundle.py"), "--out", str(bundle), "--set=BACKTEST_DATA_URL=s3://x/y"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    done = subprocess.run(
        ["bash", str(REPO / "infra" / "deploy.sh"), "--region", "us-east-1", "--skip-build", "--tag", "abc",
         *named, "--mwaa-bundle", str(bundle), "--dry-run"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    # Only reads were made.
    made_calls = calls(log)
    assert made_calls
    for call in made_calls:
        read = {"describe-stacks", "describe-images", "get-environment"} & set(call)
        assert read or call[call.index("--method") + 1] == "GET", call

    printed = dry_run_lines(done.stderr)
    assert printed[0][:4] == ["aws", "cloudformation", "--region", "us-east-1"] and "deploy" in printed[0]
    puts = [call for call in printed if "put-object" in call]
    assert [(c[c.index("--bucket") + 1], c[c.index("--key") + 1], c[c.index("--body") + 1]) for c in puts] == [
        (MWAA_BUCKET, key, str(bundle / key)) for key in ("plugins.zip", "requirements.txt", "startup.sh")
    ]
    versions = {key: f"DRY-RUN-VERSION-OF-{key}" for key in ("plugins.zip", "requirements.txt", "startup.sh")}
    updates = [call for call in printed if "update-environment" in call]
    stack_deploys = [call for call in printed if "cloudformation" in call]
    if named_by == "option":  # an environment of its own: the MWAA API
        (update,) = updates
        assert update[:6] == ["aws", "mwaa", "--region", "us-east-1", "update-environment", "--name"]
        assert dict(zip(update[5::2], update[6::2], strict=True)) == {
            "--name": "research",
            "--plugins-s3-path": "plugins.zip",
            "--plugins-s3-object-version": versions["plugins.zip"],
            "--requirements-s3-path": "requirements.txt",
            "--requirements-s3-object-version": versions["requirements.txt"],
            "--startup-script-s3-path": "startup.sh",
            "--startup-script-s3-object-version": versions["startup.sh"],
        }
        assert len(stack_deploys) == 1
    else:  # the stack's own: its parameters, so that a later deploy keeps them
        assert updates == [] and len(stack_deploys) == 2
        overrides = stack_deploys[1][stack_deploys[1].index("--parameter-overrides") + 1 :]
        assert overrides[-6:] == [
            "MwaaPluginsS3Path=plugins.zip",
            f"MwaaPluginsS3ObjectVersion={versions['plugins.zip']}",
            "MwaaRequirementsS3Path=requirements.txt",
            f"MwaaRequirementsS3ObjectVersion={versions['requirements.txt']}",
            "MwaaStartupScriptS3Path=startup.sh",
            f"MwaaStartupScriptS3ObjectVersion={versions['startup.sh']}",
        ]
    (sync,) = [call for call in printed if "sync" in call]
    assert sync[-2:] == [str(bundle / "dags"), f"s3://{MWAA_BUCKET}/dags/"] and "--delete" not in sync

    # Each pool of settings.pool_slots(): PATCH when it exists, POST otherwise; nothing else.
    rest = [call for call in printed if "invoke-rest-api" in call]
    expected = []
    for name, (slots, description) in pool_slots().items():
        body = {"name": name, "slots": slots, "description": description}
        method, path = ("PATCH", f"/pools/{name}") if name == EXISTING_POOL else ("POST", "/pools")
        expected.append((method, path, body))
    got = [(c[c.index("--method") + 1], c[c.index("--path") + 1], json.loads(c[c.index("--body") + 1])) for c in rest]
    assert got == expected and len(got) >= 2
    assert len(printed) == 1 + 3 + 1 + 1 + len(expected)  # stack, uploads, the update, sync, pools
    assert printed.index(sync) > printed.index((updates or stack_deploys)[-1])  # the DAG once the wheel is in
    assert "MWAA environment research would run (dry run) crypto-backtest==0.1.0+" in done.stderr


def test_deploy_without_an_mwaa_environment_stops_after_the_stack(fake_aws, tmp_path):
    env, log = fake_aws
    deploy = ["bash", str(REPO / "infra" / "deploy.sh"), "--region", "us-east-1", "--skip-build", "--tag", "abc"]
    done = subprocess.run([*deploy, "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not [call for call in calls(log) if "mwaa" in call]
    assert [call[1] for call in dry_run_lines(done.stderr)] == ["cloudformation"]
    done = subprocess.run([*deploy, "--mwaa-bundle", str(tmp_path), "--dry-run"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "--mwaa-bundle: no MWAA environment" in done.stderr
