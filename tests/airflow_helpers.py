"""Loading the project's DAGs in-process, with the settings a test chooses."""

from __future__ import annotations

import importlib.util
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import REPO

DAG_FILE = REPO / "dags" / "crypto_backtest_daily.py"


def import_dag_file(path: Path = DAG_FILE):
    """Execute a DAG file as a fresh module (settings are read at parse time)."""
    spec = importlib.util.spec_from_file_location(f"dag_{path.stem}_{uuid.uuid4().hex[:8]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def environment(**values: str):
    """Set environment variables for the duration of a block."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_daily_dag(**settings: str):
    """The daily DAG parsed under the given BACKTEST_* settings."""
    with environment(**settings):
        module = import_dag_file()
    return module.crypto_backtest_daily_dag if hasattr(module, "crypto_backtest_daily_dag") else _only_dag(module)


def _only_dag(module):
    from airflow.sdk import DAG

    dags = [value for value in vars(module).values() if isinstance(value, DAG)]
    assert len(dags) == 1, dags
    return dags[0]
