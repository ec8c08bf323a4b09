"""Fixtures of the test session: its Airflow home, a real S3 API (moto's server on loopback), stores
on S3 and on disk, the Binance stand-in. Importing this file changes nothing: the session's
environment is set up by `pytest_configure` and undone by `pytest_unconfigure`."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support import AIRFLOW, REPO, STORE_PAIRS, STORE_SINCE, STORE_UNTIL, airflow_env, aws_env, environment

SHARED_DATA = REPO.parent / "shared" / "data" / "binance-spot-1h"
_AIRFLOW_HOME = pytest.StashKey[Path]()
_SESSION = pytest.StashKey[ExitStack]()


def pytest_configure(config: pytest.Config) -> None:
    """The session's AIRFLOW_HOME (a fresh temp folder, SQLite DB) and settings, in os.environ.

    Airflow reads its configuration when first imported: this runs before any test module is
    collected, so before any of them imports airflow."""
    home = Path(tempfile.mkdtemp(prefix="airflow-home-"))
    session = ExitStack()
    session.callback(shutil.rmtree, home, ignore_errors=True)
    session.enter_context(
        environment(**airflow_env(home, home / "backtest-data"), AIRFLOW__CORE__UNIT_TEST_MODE="False")
    )
    config.stash[_AIRFLOW_HOME], config.stash[_SESSION] = home, session


def pytest_unconfigure(config: pytest.Config) -> None:
    """The environment as it was before the session; its Airflow home deleted."""
    if _SESSION in config.stash:
        config.stash[_SESSION].close()


@pytest.fixture(scope="session")
def airflow_db(pytestconfig) -> Path:
    """The session's Airflow metadata DB (SQLite), migrated once."""
    subprocess.run([str(AIRFLOW), "db", "migrate"], check=True, capture_output=True, timeout=300)
    return pytestconfig.stash[_AIRFLOW_HOME]


@pytest.fixture(scope="session")
def moto_server():
    """moto in server mode on a free loopback port; AWS_* variables point every client at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with environment(**aws_env(endpoint), AWS_ENDPOINT_URL_S3=None, AWS_REGION="us-east-1"):
            yield endpoint
    finally:
        server.stop()


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
def store(tmp_path) -> str:
    """A local store holding synthetic candles of STORE_PAIRS from STORE_SINCE to STORE_UNTIL."""
    from backtest.data.store import CandleStore
    from backtest.data.synthetic import synthetic_candles

    url = str(tmp_path / "store")
    for symbol in STORE_PAIRS:
        CandleStore(url).write(symbol, synthetic_candles(symbol, STORE_SINCE, STORE_UNTIL), "synthetic")
    return url


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


@pytest.fixture
def strategy_folder(tmp_path, monkeypatch) -> Path:
    """An empty folder on BACKTEST_STRATEGY_PATH (this process's and its children's) for a test's
    own strategy modules; the registry of strategies is as before once the test is over."""
    from backtest.strategies import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_IMPORTED", set(registry._IMPORTED))
    folder = tmp_path / "user-strategies"
    folder.mkdir()
    monkeypatch.setenv(registry.STRATEGY_PATH_ENV, str(folder))
    return folder
