"""Build the Amazon MWAA bundle of the project: `make mwaa-bundle` (docs/mwaa.md).

MWAA installs user code from three S3 objects and a DAG folder, so the bundle is:

    dist/mwaa/dags/            the DAG file and an .airflowignore (synced to the DAG folder)
    dist/mwaa/plugins.zip      the project's wheel and the UI plugin module, at the zip's root
                               (MWAA unzips it into /usr/local/airflow/plugins, the plugins folder)
    dist/mwaa/requirements.txt MWAA's constraints for its Airflow version, --find-links to that
                               folder, and the wheel by name and exact version
    dist/mwaa/startup.sh       exports the BACKTEST_* settings (MWAA sources it in every component)

The wheel's version is pyproject's plus a local label naming the commit (`0.1.0+g<commit>`, with
`.dirty<time>` for uncommitted changes): `==` that version matches this wheel only, never a
release of the same name on PyPI. The settings come from the CloudFormation stack's outputs
(`--stack`), from BACKTEST_* variables of this process (`--from-env`) and from `--set`, the later
winning. It needs the project's venv (its pip and setuptools build the wheel, without build
isolation: no download) and, for `--stack`, the AWS CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from backtest_airflow.settings import check_settings

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_VERSION = "3.3.1"  # the newest Airflow MWAA runs
MWAA_PYTHON = "3.12"  # MWAA's Python for that version
# MWAA's docs' form; the same file as MWAA's image's own (its etc/airflow_constraints.txt)
CONSTRAINTS_URL = "https://raw.githubusercontent.com/apache/airflow/constraints-{airflow}/constraints-{python}.txt"
PLUGINS_PATH = "/usr/local/airflow/plugins"  # where MWAA unzips plugins.zip
DAG_FILE = REPO / "dags" / "crypto_backtest_daily.py"
PLUGIN_FILE = REPO / "plugins" / "backtest_ui_plugin.py"
PACKAGES = ("backtest", "backtest_airflow", "strategies")  # what goes into the wheel
# The stack's outputs (infra/backtest-stack.yaml) and the settings they give, as deploy.sh prints them
STACK_SETTINGS = {
    "DataUrl": "BACKTEST_DATA_URL",
    "JobQueueName": "BACKTEST_BATCH_JOB_QUEUE",
    "JobDefinitionName": "BACKTEST_BATCH_JOB_DEFINITION",
    "JobVcpu": "BACKTEST_JOB_VCPU",
    "JobMemory": "BACKTEST_JOB_MEMORY_MIB",
    "JobTimeoutSeconds": "BACKTEST_BATCH_JOB_TIMEOUT_SECONDS",
    "AlertsTopicArn": "BACKTEST_NOTIFY_SNS_TOPIC_ARN",
}
DEFAULT_SETTINGS = {"BACKTEST_EXECUTOR": "batch", "BACKTEST_SOURCE": "binance"}
BUNDLE_FILES = {"dags", "plugins.zip", "requirements.txt", "startup.sh"}
AIRFLOWIGNORE = """\
# Read by Airflow's DAG processor (glob syntax, Airflow 3's default): what it does not parse here.
__pycache__/
*.pyc
"""


class BundleError(Exception):
    """A bundle that cannot be built as asked (the message says why)."""


def wheel_version(base: str) -> str:
    """`base+g<commit>` (`.dirty<UTC time>` when the packaged folders have uncommitted changes);
    `base+local` outside a git checkout."""
    try:
        commit = git("rev-parse", "--short=12", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return f"{base}+local"
    dirty = git("status", "--porcelain", "--", *PACKAGES, "pyproject.toml")
    return f"{base}+g{commit}" + (time.strftime(".dirty%Y%m%d%H%M%S", time.gmtime()) if dirty else "")


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def build_wheel(out: Path, version: str | None = None) -> Path:
    """The project's wheel in `out`, built from a copy of the sources (nothing is written into the
    checkout), with the version set in the copy's pyproject.toml. Its path."""
    pyproject = (REPO / "pyproject.toml").read_text()
    base = re.search(r'^version = "([^"]+)"$', pyproject, flags=re.MULTILINE)
    if not base:
        raise BundleError("pyproject.toml has no version line")
    version = version or wheel_version(base.group(1))
    with tempfile.TemporaryDirectory(prefix="mwaa-wheel-") as tmp:
        source = Path(tmp) / "src"
        source.mkdir()
        (source / "pyproject.toml").write_text(pyproject.replace(base.group(0), f'version = "{version}"', 1))
        for package in PACKAGES:
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
            shutil.copytree(REPO / package, source / package, ignore=ignore)
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        done = subprocess.run([*command, "--wheel-dir", str(out), str(source)], capture_output=True, text=True)
        if done.returncode != 0:
            raise BundleError(f"building the wheel failed:\n{done.stderr}")
    (wheel,) = out.glob(f"crypto_backtest-{version}-*.whl")
    return wheel


def stack_settings(stack: str, region: str | None) -> dict[str, str]:
    """The BACKTEST_* settings from the stack's outputs (`aws cloudformation describe-stacks`)."""
    command = ["aws", "cloudformation", "describe-stacks", "--stack-name", stack, "--output", "json"]
    command += ["--region", region] if region else []
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as error:  # no AWS CLI
        raise BundleError(f"cannot run the AWS CLI: {error}") from error
    if done.returncode != 0:
        raise BundleError(f"cannot read stack {stack}: {done.stderr.strip()}")
    outputs = json.loads(done.stdout)["Stacks"][0].get("Outputs", [])
    values = {item["OutputKey"]: item["OutputValue"] for item in outputs}
    return {name: values[key] for key, name in STACK_SETTINGS.items() if values.get(key) not in (None, "", "None")}


def parse_set(items: list[str]) -> dict[str, str]:
    settings = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"BACKTEST_[A-Z0-9_]+", name):
            raise BundleError(f"--set takes BACKTEST_NAME=VALUE, not {item!r}")
        settings[name] = value
    return settings


def startup_script(settings: dict[str, str], source: str) -> str:
    lines = [
        "#!/usr/bin/env bash",
        "# Amazon MWAA startup script of crypto-backtest, written by infra/mwaa_bundle.py (docs/mwaa.md).",
        f"# Settings from: {source}. MWAA sources this in every Airflow component before it starts;",
        "# AWS_DEFAULT_REGION and AWS_REGION are MWAA's own (its environment's region) and stay so.",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(settings.items())]
    return "\n".join(lines) + "\n"


def requirements(wheel: Path, airflow: str, python: str) -> str:
    name, version = wheel.name.split("-")[:2]
    constraint = CONSTRAINTS_URL.format(airflow=airflow, python=python)
    return (
        f"# Amazon MWAA (Airflow {airflow}, Python {python}) requirements of crypto-backtest, written by\n"
        "# infra/mwaa_bundle.py (docs/mwaa.md). The wheel is in plugins.zip; its dependencies come from PyPI.\n"
        f'--constraint "{constraint}"\n'
        f"--find-links {PLUGINS_PATH}\n"
        f"{name.replace('_', '-')}=={version}\n"
    )


def build(out: Path, settings: dict[str, str], source: str, airflow: str = AIRFLOW_VERSION,
          python: str = MWAA_PYTHON, version: str | None = None) -> dict:  # fmt: skip
    """Write the bundle into `out` (emptied first); what it holds."""
    if out.exists() and not {p.name for p in out.iterdir()} <= BUNDLE_FILES:
        raise BundleError(f"{out} holds other files than a bundle's: not emptying it")
    shutil.rmtree(out, ignore_errors=True)
    (out / "dags").mkdir(parents=True)
    shutil.copy2(DAG_FILE, out / "dags" / DAG_FILE.name)
    (out / "dags" / ".airflowignore").write_text(AIRFLOWIGNORE)
    with tempfile.TemporaryDirectory(prefix="mwaa-bundle-") as tmp:
        wheel = build_wheel(Path(tmp), version)
        with zipfile.ZipFile(out / "plugins.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(wheel, wheel.name)
            archive.write(PLUGIN_FILE, PLUGIN_FILE.name)
    (out / "requirements.txt").write_text(requirements(wheel, airflow, python))
    (out / "startup.sh").write_text(startup_script(settings, source))
    (out / "startup.sh").chmod(0o755)
    return {"out": str(out), "wheel": wheel.name, "airflow": airflow, "python": python, "settings": settings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mwaa_bundle.py",
        description="Write the Amazon MWAA bundle (dags/, plugins.zip, requirements.txt, startup.sh).",
    )
    parser.add_argument("--out", type=Path, default=REPO / "dist" / "mwaa", help="bundle folder (dist/mwaa)")
    parser.add_argument("--stack", help="take the settings from this CloudFormation stack's outputs")
    parser.add_argument("--region", help="the stack's region (default: the AWS CLI's)")
    parser.add_argument("--from-env", action="store_true", help="take the BACKTEST_* variables of this environment")
    parser.add_argument("--set", action="append", default=[], metavar="BACKTEST_NAME=VALUE", help="a setting")
    parser.add_argument("--airflow-version", default=AIRFLOW_VERSION, help=f"MWAA's Airflow ({AIRFLOW_VERSION})")
    parser.add_argument("--python-version", default=MWAA_PYTHON, help=f"MWAA's Python ({MWAA_PYTHON})")
    parser.add_argument("--version", help="the wheel's version (default: pyproject's +g<commit>)")
    args = parser.parse_args(argv)
    try:
        settings, sources = dict(DEFAULT_SETTINGS), ["defaults"]
        if args.stack:
            settings.update(stack_settings(args.stack, args.region))
            sources.append(f"stack {args.stack}")
        if args.from_env:
            settings.update({k: v for k, v in os.environ.items() if k.startswith("BACKTEST_")})
            sources.append("the environment")
        if args.set:
            settings.update(parse_set(args.set))
            sources.append("--set")
        url = settings.get("BACKTEST_DATA_URL", "")
        if not url.startswith("s3://"):
            given = f"not an s3:// URL: {url!r}" if url else "pass --stack, --from-env or --set"
            raise BundleError(f"MWAA needs BACKTEST_DATA_URL=s3://...: {given}")
        check_settings(settings)
        made = build(args.out, settings, ", ".join(sources), args.airflow_version, args.python_version, args.version)
    except (BundleError, ValueError) as error:  # ValueError: a setting the components would refuse
        print(f"mwaa_bundle.py: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(made, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
