"""Shared fixtures: a real S3 API (moto's server on loopback) and store URLs on S3 and on disk."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "binance-spot-1h"

# Airflow reads its configuration when first imported, so the test session's AIRFLOW_HOME (a
# fresh temp folder with a SQLite DB) is set here, before any test module imports airflow.
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="airflow-home-"))
AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "backtest_airflow.settings.SQLITE_CONNECT_ARGS",
    "BACKTEST_DATA_URL": str(AIRFLOW_HOME / "backtest-data"),
    "BACKTEST_TASK_RETRIES": "0",
}
os.environ.update(AIRFLOW_ENV)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The session's Airflow metadata DB (SQLite), migrated once."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, timeout=300)
    return AIRFLOW_HOME


@pytest.fixture(scope="session")
def moto_server():
    """moto in server mode on a free loopback port; AWS_* variables point every client at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
    )
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_AWS_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


@pytest.fixture
def s3_bucket(moto_server) -> str:
    """A fresh, empty bucket on the moto server."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def store_url(request, tmp_path) -> str:
    """The same store tests run against a local folder and against S3 (moto server)."""
    if request.param == "local":
        return str(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/prefix"


@pytest.fixture
def shared_data() -> Path:
    """Real Binance candles beside the checkout; tests using them skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real Binance data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def exchange():
    """A Binance stand-in on loopback (tests/exchange.py) with its default data; stopped after the test."""
    from tests.exchange import FakeExchange

    with FakeExchange() as server:
        yield server


@pytest.fixture
def exchange_factory():
    """Start Binance stand-ins with custom data (now, outages, weight); all stopped after the test."""
    from tests.exchange import FakeExchange

    servers = []

    def start(**kwargs) -> FakeExchange:
        server = FakeExchange(**kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
