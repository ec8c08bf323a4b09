"""What an operator of the system configures once, read from the environment.

| setting              | env var                          | default                              |
|----------------------|----------------------------------|--------------------------------------|
| store URL            | BACKTEST_DATA_URL                | $AIRFLOW_HOME/backtest-data (local)  |
| candle source        | BACKTEST_SOURCE                  | synthetic (offline embedded default) |
| executor mode        | BACKTEST_EXECUTOR                | local (`batch` for AWS Batch)        |
| Batch job queue      | BACKTEST_BATCH_JOB_QUEUE         | crypto-backtest                      |
| Batch job definition | BACKTEST_BATCH_JOB_DEFINITION    | crypto-backtest                      |
| AWS connection id    | BACKTEST_AWS_CONN_ID             | aws_default                          |
| alerts SNS topic ARN | BACKTEST_NOTIFY_SNS_TOPIC_ARN    | unset: alerts are log lines          |
| Batch poll interval  | BACKTEST_BATCH_POLL_SECONDS      | 30                                   |
| Batch job timeout    | BACKTEST_BATCH_JOB_TIMEOUT_SECONDS | 3600 (the stack's JobTimeoutSeconds) |
| local parallelism    | BACKTEST_LOCAL_MAX_PARALLEL      | 2 (concurrent local jobs per run)    |
| task retries         | BACKTEST_TASK_RETRIES            | 2 (exponential backoff from 1 min)   |
| job size             | BACKTEST_JOB_VCPU / _MEMORY_MIB  | 1 vCPU / 2048 MiB (a Fargate combo)  |
| Fargate prices (USD) | BACKTEST_FARGATE_VCPU_HOUR, ..._GB_HOUR, ..._SPOT_VCPU_HOUR, ..._SPOT_GB_HOUR | see below |
| pair list            | Variable `backtest_pairs`        | backtest_airflow/pairs.txt   |

Fargate prices default to AWS's published us-east-1 Linux/x86 rates: on-demand $0.04048 per
vCPU-hour and $0.004445 per GB-hour; Spot $0.01291590 per vCPU-hour and $0.00141800 per
GB-hour (Spot rates move; set the variables for your region). Fargate bills per second with a
one-minute minimum per task.

Pools (created by `make airflow`, on Amazon MWAA by `infra/deploy.sh --mwaa-environment`; elsewhere
create them once, see docs/operation.md, "Concurrency"). `plan` checks that the DAG's pools exist,
asking the REST API (`backtest_airflow/pools.py`), and fails the run at once, naming them and the
`airflow pools set` commands, when one is missing; where it cannot ask, it logs a warning saying why:

| pool                | slots            | bounds                                                  |
|---------------------|------------------|---------------------------------------------------------|
| backtest_exchange   | 2                | concurrent refresh tasks, i.e. request streams to the exchange |
| backtest_local      | CPU cores        | concurrent local backtest jobs across all runs (local mode) |

Where a setting comes from, first match wins (one rule for every row above but the pair list):

1. the environment variable (`BACKTEST_DATA_URL`), e.g. from MWAA's `startup.sh`;
2. the Airflow configuration option of section `[backtest]`, named as the variable without its
   `BACKTEST_` prefix, lower-cased (`[backtest] data_url`, i.e. `AIRFLOW__BACKTEST__DATA_URL`,
   or an MWAA "Airflow configuration option" `backtest.data_url`);
3. the default.

The executor mode and store URL shape the DAG (operator class, asset URIs), so they are read
when the DAG file is parsed: set them for every Airflow component (scheduler, DAG processor,
workers, triggerer), which both the environment and the Airflow configuration are.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

PAIRS_FILE = Path(__file__).with_name("pairs.txt")
PAIRS_VARIABLE = "backtest_pairs"
# A SQLite metadata DB written by several processes (the tests' Airflow components, a CLI beside
# them) waits up to a minute for a lock instead of failing with "database is locked" after 5 s:
# AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS=backtest_airflow.settings.SQLITE_CONNECT_ARGS
SQLITE_CONNECT_ARGS = {"timeout": 60}
EXCHANGE_POOL = "backtest_exchange"
LOCAL_POOL = "backtest_local"


def pool_slots() -> dict[str, tuple[int, str]]:
    """Each pool's slots and description (what `make airflow` creates)."""
    return {
        EXCHANGE_POOL: (2, "Refresh tasks: concurrent request streams to the exchange (its API weight budget)"),
        LOCAL_POOL: (os.cpu_count() or 1, "Local-mode backtest jobs: one process per CPU core, across all runs"),
    }


@dataclass(frozen=True)
class Settings:
    data_url: str
    source: str
    executor: str
    job_queue: str
    job_definition: str
    aws_conn_id: str
    poll_interval: int
    job_timeout_seconds: int
    local_max_parallel: int
    task_retries: int
    job_vcpu: float
    job_memory_mib: int
    prices: dict[str, float]
    notify_sns_topic_arn: str


CONFIG_SECTION = "backtest"  # the Airflow configuration section of the settings: [backtest] data_url, ...
ENV_PREFIX = "BACKTEST_"


_NAMES: set[str] = set()  # every name `_setting` was asked for (see `setting_names`)


def _setting(env_name: str, default: str) -> str:
    """One setting by the module's precedence: environment, then `[backtest]` configuration, then default."""
    _NAMES.add(env_name)
    value = os.environ.get(env_name)
    if value is not None:
        return value
    option = env_name.removeprefix(ENV_PREFIX).lower()
    try:
        from airflow.configuration import conf

        configured = conf.get(CONFIG_SECTION, option, fallback=None)
    except ImportError:  # no Airflow here (a tool beside it): the environment and defaults only
        configured = None
    return default if configured is None else configured


def _number(kind: type, env_name: str, default: str) -> int | float:
    """A numeric setting; a value that is not one fails naming the variable."""
    value = _setting(env_name, default)
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{env_name} must be {'an integer' if kind is int else 'a number'}, not {value!r}") from None


def load_settings() -> Settings:
    """Every setting, each by the precedence above; a bad executor mode fails here, at parse time."""
    airflow_home = os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow"))
    executor = _setting("BACKTEST_EXECUTOR", "local")
    if executor not in ("local", "batch"):
        raise ValueError(f"BACKTEST_EXECUTOR must be 'local' or 'batch', not {executor!r}")
    return Settings(
        data_url=_setting("BACKTEST_DATA_URL", "") or os.path.join(airflow_home, "backtest-data"),
        source=_setting("BACKTEST_SOURCE", "synthetic"),
        executor=executor,
        job_queue=_setting("BACKTEST_BATCH_JOB_QUEUE", "crypto-backtest"),
        job_definition=_setting("BACKTEST_BATCH_JOB_DEFINITION", "crypto-backtest"),
        aws_conn_id=_setting("BACKTEST_AWS_CONN_ID", "aws_default"),
        poll_interval=_number(int, "BACKTEST_BATCH_POLL_SECONDS", "30"),
        job_timeout_seconds=_number(int, "BACKTEST_BATCH_JOB_TIMEOUT_SECONDS", "3600"),
        local_max_parallel=_number(int, "BACKTEST_LOCAL_MAX_PARALLEL", "2"),
        task_retries=_number(int, "BACKTEST_TASK_RETRIES", "2"),
        job_vcpu=_number(float, "BACKTEST_JOB_VCPU", "1"),
        job_memory_mib=_number(int, "BACKTEST_JOB_MEMORY_MIB", "2048"),
        prices={
            "vcpu_hour": _number(float, "BACKTEST_FARGATE_VCPU_HOUR", "0.04048"),
            "gb_hour": _number(float, "BACKTEST_FARGATE_GB_HOUR", "0.004445"),
            "spot_vcpu_hour": _number(float, "BACKTEST_FARGATE_SPOT_VCPU_HOUR", "0.0129159"),
            "spot_gb_hour": _number(float, "BACKTEST_FARGATE_SPOT_GB_HOUR", "0.001418"),
        },
        notify_sns_topic_arn=_setting("BACKTEST_NOTIFY_SNS_TOPIC_ARN", ""),
    )


def setting_names() -> frozenset[str]:
    """Every BACKTEST_* variable an Airflow component reads: `load_settings`' (recorded as it reads
    them, so the list cannot drift from it) and those the refresh and the job code read on a worker."""
    from backtest.data.locks import LOCK_LEASE_ENV, LOCK_WAIT_ENV
    from backtest.strategies.registry import STRATEGY_PATH_ENV

    with contextlib.suppress(ValueError):  # a bad value in this environment: the names were read all the same
        load_settings()
    return frozenset({*_NAMES, STRATEGY_PATH_ENV, LOCK_LEASE_ENV, LOCK_WAIT_ENV})


def check_settings(values: dict[str, str]) -> None:
    """Refuse (ValueError, one line) BACKTEST_* values a component would refuse or ignore: an unknown
    name, or a value `load_settings` cannot read. For a bundle written here and sourced on MWAA."""
    unknown = sorted(set(values) - setting_names())
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}: not one of {', '.join(sorted(setting_names()))}")
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        load_settings()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def pairs_from_file(path: Path = PAIRS_FILE) -> list[str]:
    """Symbols listed in the pairs file (comments and blank lines skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def configured_pairs() -> list[str]:
    """The pair list a run uses by default: the `backtest_pairs` Variable when set, else the pairs file.

    Read when the DAG is parsed, so the trigger form shows it; where no Variable can be read
    (no Airflow metadata at hand), the file's list.
    """
    try:
        from airflow.sdk import Variable

        value = Variable.get(PAIRS_VARIABLE, default=None)
    except Exception:  # no API server or DB to ask: parsing must still work
        value = None
    return parse_pairs_variable(value) if value else pairs_from_file()


def parse_pairs_variable(value: str) -> list[str]:
    """The `backtest_pairs` Variable: a JSON list or a comma/whitespace-separated string."""
    value = value.strip()
    if value.startswith("["):
        return [str(item).strip() for item in json.loads(value)]
    return [item for item in value.replace(",", " ").split() if item]


def asset_uri(data_url: str, *parts: str) -> str:
    """An Asset URI for a place in the store (`s3://...` or `file:///...`)."""
    base = data_url if "://" in data_url else "file://" + os.path.abspath(data_url)
    return "/".join([base.rstrip("/"), *parts])
