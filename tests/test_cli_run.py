"""`python -m backtest run`: one JSON object out, result files, and clean failures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from backtest.cli import main
from backtest.job import RunSpec, backtest
from backtest.params import HOUR_MS, parse_time_ms
from backtest.storage import read_bytes, resolve
from backtest.store import CandleStore
from backtest.synthetic import synthetic_candles
from tests.conftest import REPO

METRICS = [
    "total_return",
    "buy_hold_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "trades",
    "win_rate",
    "exposure",
    "bars",
    "gaps",
]
SINCE, UNTIL = parse_time_ms("2024-01-01"), parse_time_ms("2024-05-01")


@pytest.fixture
def store(tmp_path) -> str:
    url = str(tmp_path / "store")
    CandleStore(url).write("BTCUSDT", synthetic_candles("BTCUSDT", SINCE, UNTIL), "synthetic")
    return url


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["run", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_prints_exactly_one_json_object_and_writes_result_files(capsys, store, tmp_path):
    results = tmp_path / "results"
    args = ["--symbol", "BTCUSDT", "--data-url", store, "--start", "2024-03-01", "--end", "2024-05-01"]
    code, out, _err = run_cli(capsys, *args, "--results-url", str(results))
    assert code == 0
    assert out.count("\n") == 1
    result = json.loads(out)
    assert set(METRICS) <= set(result)
    assert result["symbol"] == "BTCUSDT" and result["strategy"] == "sma_trend"
    assert result["params"] == {"window": "15d", "window_bars": 360, "fee_bps": 10.0}
    assert result["start"] == "2024-03-01T00:00:00Z" and result["end"] == "2024-05-01T00:00:00Z"
    assert result["bars"] == (31 + 30) * 24 and result["warmup_bars"] == 359
    assert result["synthetic"] is True and result["data_source"] == "synthetic"

    assert json.loads((results / "BTCUSDT.json").read_text()) == result
    equity = pq.read_table(results / "BTCUSDT.equity.parquet")
    assert equity.column_names == ["open_time", "equity", "position"]
    assert equity.num_rows == result["bars"]
    assert equity.column("equity")[-1].as_py() == pytest.approx(1 + result["total_return"], rel=1e-15)


def test_window_spellings_agree(capsys, store):
    base = ["--symbol", "BTCUSDT", "--data-url", store, "--start", "2024-04-01"]
    outs = [json.loads(run_cli(capsys, *base, "--window", w)[1]) for w in ("15d", "360", "360h")]
    assert outs[0]["total_return"] == outs[1]["total_return"] == outs[2]["total_return"]


def test_input_file_parquet_and_csv_agree_with_the_store(capsys, store, tmp_path):
    candles = CandleStore(store).read("BTCUSDT").candles
    parquet = tmp_path / "btc.parquet"
    pq.write_table(candles.to_table(), parquet)
    csv = tmp_path / "btc.csv"
    times = np.datetime_as_string(candles.open_time.astype("datetime64[ms]"), unit="s")
    rows = ["date,open,high,low,close,volume,ticker"]  # the exported-Binance header is accepted too
    rows += [
        f"{t.replace('T', ' ')},{o!r},{h!r},{lo!r},{c!r},{v!r},BTCUSDT"
        for t, o, h, lo, c, v in zip(
            times,
            candles.open.tolist(),
            candles.high.tolist(),
            candles.low.tolist(),
            candles.close.tolist(),
            candles.volume.tolist(),
            strict=True,
        )
    ]
    csv.write_text("\n".join(rows) + "\n")
    window = ["--start", "2024-04-01", "--end", "2024-05-01", "--window", "48"]
    results = [
        json.loads(run_cli(capsys, "--symbol", "BTCUSDT", source, value, *window)[1])
        for source, value in (("--data-url", store), ("--input", str(parquet)), ("--input", str(csv)))
    ]
    for key in METRICS:
        assert results[0][key] == results[1][key] == results[2][key], key
    assert results[1]["data_source"] == "file"


def test_s3_store_and_results(capsys, s3_bucket):
    url = f"s3://{s3_bucket}/data"
    CandleStore(url).write("ETHUSDT", synthetic_candles("ETHUSDT", SINCE, UNTIL), "synthetic")
    results = f"s3://{s3_bucket}/results/run-1"
    code, out, _ = run_cli(
        capsys, "--symbol", "ETHUSDT", "--data-url", url, "--start", "2024-04-01", "--results-url", results
    )
    assert code == 0
    assert json.loads(read_bytes(resolve(results + "/ETHUSDT.json"))) == json.loads(out)
    assert read_bytes(resolve(results + "/ETHUSDT.equity.parquet")) is not None


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--symbol", "btc-usdt"], 2, "invalid symbol"),
        (["--symbol", "DOGEUSDT"], 3, "no candles stored for DOGEUSDT"),
        (["--symbol", "BTCUSDT", "--window", "abc"], 2, "invalid window"),
        (["--symbol", "BTCUSDT", "--window", "1"], 2, "invalid window"),
        (["--symbol", "BTCUSDT", "--fee-bps", "-5"], 2, "invalid fee"),
        (["--symbol", "BTCUSDT", "--fee-bps", "nan"], 2, "invalid fee"),
        (["--symbol", "BTCUSDT", "--start", "2024-13-01"], 2, "invalid --start"),
        (["--symbol", "BTCUSDT", "--start", "2024-04-01", "--end", "2024-03-01"], 2, "empty window"),
        (["--symbol", "BTCUSDT", "--start", "2025-01-01", "--end", "2025-02-01"], 3, "no candles for BTCUSDT"),
        (["--symbol", "BTCUSDT", "--end", "2024-01-05", "--window", "15d"], 3, "needs 360 candles"),
        (["--symbol", "BTCUSDT", "--bogus"], 2, "unrecognized arguments"),
    ],
)
def test_bad_input_fails_with_one_line_and_writes_nothing(capsys, store, tmp_path, args, code, message):
    results = tmp_path / "results"
    rc, out, err = run_cli(capsys, "--data-url", store, "--results-url", str(results), *args)
    assert rc == code
    assert out == ""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert not results.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not,a,candle\n1,2,3\n", "missing column"),
        (b"\x00\x01garbage", "not a readable candle file"),
        (b"open_time,open,high,low,close,volume\n2024-01-01 00:00:00,1,0.5,0.9,1,1\n", "OHLC"),
    ],
)
def test_malformed_input_files(capsys, tmp_path, content, message):
    path = tmp_path / ("bad.csv" if content.startswith((b"not", b"open")) else "bad.parquet")
    path.write_bytes(content)
    rc, out, err = run_cli(capsys, "--symbol", "BTCUSDT", "--input", str(path), "--window", "2")
    assert rc == 3 and out == "" and message in err


def test_missing_input_file(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "--symbol", "BTCUSDT", "--input", str(tmp_path / "nope.parquet"))
    assert rc == 3 and "input file not found" in err


def test_subprocess_entrypoint(store):
    """The container's entrypoint, as a process: stdout is the JSON, stderr the logs."""
    args = [
        sys.executable,
        "-m",
        "backtest",
        "run",
        "--symbol",
        "BTCUSDT",
        "--data-url",
        store,
        "--start",
        "2024-04-01",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    spec = RunSpec("BTCUSDT", "15d", (("15d", 360),), 10.0, start_ms=parse_time_ms("2024-04-01"), data_url=store)
    assert result == backtest(spec)[0]
    assert "INFO backtest: read" in proc.stderr  # logs go to stderr

    bad = subprocess.run([*args[:5], "bad!"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert bad.returncode == 2 and bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1


def test_real_binance_candles(capsys, shared_data, tmp_path):
    """Realism check on real BTCUSDT candles: the five known exchange outages are counted as gaps."""
    path = shared_data / "binance_spot_BTCUSDT_1h_misrori.csv"
    rc, out, _ = run_cli(
        capsys, "--symbol", "BTCUSDT", "--input", str(path), "--start", "2021-05-01", "--end", "2023-12-30"
    )
    assert rc == 0
    result = json.loads(out)
    # Outages after 2021-05-01: 2021-08-13 (+5h step), 2021-09-29 (+3h), 2023-03-24 (+2h) -> 4 + 2 + 1 missing hours.
    assert result["gaps"] == 7
    first, end = parse_time_ms("2021-05-01"), parse_time_ms("2023-12-30")
    assert result["bars"] == (end - first) // HOUR_MS - 7
    assert 0 < result["max_drawdown"] < 1 and result["trades"] > 50
