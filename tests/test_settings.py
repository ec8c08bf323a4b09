"""Where a setting comes from: the environment, then Airflow's `[backtest]` configuration, then the default.

Real Airflow configuration: `AIRFLOW__BACKTEST__<OPTION>` is how Airflow (and MWAA's "Airflow
configuration options") sets `[backtest] <option>`, read by `airflow.configuration.conf`.
"""

from __future__ import annotations

import re

import pytest

from backtest_airflow.settings import load_settings


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("BACKTEST_DATA_URL", "BACKTEST_EXECUTOR", "BACKTEST_BATCH_JOB_TIMEOUT_SECONDS", "BACKTEST_JOB_VCPU"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv("AIRFLOW__BACKTEST__" + name.removeprefix("BACKTEST_"), raising=False)
    return monkeypatch


def test_the_environment_wins_over_the_airflow_configuration(clean_env):
    clean_env.setenv("BACKTEST_DATA_URL", "s3://from-env/store")
    clean_env.setenv("AIRFLOW__BACKTEST__DATA_URL", "s3://from-config/store")
    assert load_settings().data_url == "s3://from-env/store"


def test_the_airflow_configuration_wins_over_the_default(clean_env):
    clean_env.setenv("AIRFLOW__BACKTEST__EXECUTOR", "batch")
    clean_env.setenv("AIRFLOW__BACKTEST__BATCH_JOB_TIMEOUT_SECONDS", "900")
    clean_env.setenv("AIRFLOW__BACKTEST__JOB_VCPU", "2")
    settings = load_settings()
    assert (settings.executor, settings.job_timeout_seconds, settings.job_vcpu) == ("batch", 900, 2.0)


def test_the_defaults_apply_when_neither_is_set(clean_env, tmp_path):
    clean_env.setenv("AIRFLOW_HOME", str(tmp_path))
    settings = load_settings()
    assert settings.data_url == str(tmp_path / "backtest-data")
    assert (settings.executor, settings.job_timeout_seconds) == ("local", 3600)


def test_a_bad_executor_from_the_configuration_fails_in_one_line(clean_env):
    clean_env.setenv("AIRFLOW__BACKTEST__EXECUTOR", "kubernetes")
    with pytest.raises(ValueError, match="BACKTEST_EXECUTOR must be 'local' or 'batch', not 'kubernetes'"):
        load_settings()


def test_check_settings_refuses_what_a_component_would_refuse_or_ignore(clean_env):
    from backtest_airflow.settings import check_settings, setting_names

    assert {"BACKTEST_DATA_URL", "BACKTEST_BATCH_JOB_TIMEOUT_SECONDS", "BACKTEST_STRATEGY_PATH"} <= setting_names()
    check_settings({"BACKTEST_DATA_URL": "s3://bucket/data", "BACKTEST_EXECUTOR": "batch", "BACKTEST_JOB_VCPU": "0.5"})
    with pytest.raises(ValueError, match=r"unknown setting\(s\) BACKTEST_DATAURL: not one of"):
        check_settings({"BACKTEST_DATAURL": "s3://bucket/data"})
    with pytest.raises(ValueError, match="BACKTEST_JOB_VCPU must be a number, not 'banana'"):
        check_settings({"BACKTEST_JOB_VCPU": "banana"})
    with pytest.raises(ValueError, match=re.escape("BACKTEST_TASK_RETRIES must be an integer, not '2.5'")):
        check_settings({"BACKTEST_TASK_RETRIES": "2.5"})
    import os

    assert "BACKTEST_JOB_VCPU" not in os.environ  # the check leaves the environment as it was
