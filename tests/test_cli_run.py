"""`python -m backtest run`: one JSON object out, result files, clean failures; window sweeps, hold-out
and a chunk of pairs in one job (grids of the other strategies: tests/test_strategies.py)."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

from backtest.data.storage import read_bytes, resolve
from backtest.data.store import CandleStore
from backtest.data.synthetic import synthetic_candles
from backtest.errors import InputError
from backtest.job import RunSpec, backtest
from backtest.params import HOUR_MS, parse_time_ms, parse_windows
from backtest.simulation.metrics import METRIC_NAMES as METRICS
from backtest.strategy import get, grid_of
from tests.support import STORE_SINCE, STORE_UNTIL, backtest_process, make_candles, run_cli, run_json


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
    # the file's own ticker column names its pair: another --symbol is refused, nothing written
    rc, out, err = run_cli(capsys, "--symbol", "ETHUSDT", "--input", str(csv), *window)
    assert (rc, out) == (2, "")
    assert err.strip() == f"error: {csv}: its ticker column names BTCUSDT, not ETHUSDT (check --symbol)"


def test_s3_store_and_results(capsys, s3_bucket):
    url = f"s3://{s3_bucket}/data"
    CandleStore(url).write("ETHUSDT", synthetic_candles("ETHUSDT", STORE_SINCE, STORE_UNTIL), "synthetic")
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
        (b"\x00\x01garbage", "not a readable candle file: read as Parquet (a name not ending in .csv or .csv.gz"),
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
    proc = backtest_process("run", "--symbol", "BTCUSDT", "--data-url", store, "--start", "2024-04-01")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    spec = RunSpec("BTCUSDT", grid_of("sma_trend"), 10.0, start_ms=parse_time_ms("2024-04-01"), data_url=store)
    assert result == backtest(spec)[0]
    assert "INFO backtest: read" in proc.stderr  # logs go to stderr

    bad = backtest_process("run", "--symbol", "bad!")
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


def test_end_counts_only_candles_closed_by_it(capsys, store):
    """The candle that opens at 00:00 closes at 01:00, after an end of 00:30: it is not used."""
    base = ["--symbol", "BTCUSDT", "--data-url", store, "--start", "2024-04-01", "--window", "24"]
    mid_hour = json.loads(run_cli(capsys, *base, "--end", "2024-04-10T00:30Z")[1])
    on_hour = json.loads(run_cli(capsys, *base, "--end", "2024-04-10T00:00Z")[1])
    assert mid_hour["last_bar"] == "2024-04-09T23:00:00Z" and mid_hour["end"] == "2024-04-10T00:00:00Z"
    assert mid_hour == on_hour


def _write_candles(path, scale: float) -> None:
    rng = np.random.default_rng(1)
    close = np.exp(np.cumsum(rng.normal(0, 0.01, 600))) * scale
    opens = np.concatenate([[close[0]], close[:-1]])
    pq.write_table(make_candles(opens, close).to_table(), path)


def test_prices_that_overflow_the_arithmetic_are_bad_data(capsys, tmp_path):
    results = {}
    for scale in (1.0, 1e300, 1e306):
        path = tmp_path / f"{scale}.parquet"
        _write_candles(path, scale)
        results[scale] = run_cli(capsys, "--symbol", "BTCUSDT", "--input", str(path), "--window", "24")
    same = json.loads(results[1.0][1]), json.loads(results[1e300][1])
    assert same[0]["trades"] == same[1]["trades"] > 0  # scale-free up to 1e300
    rc, out, err = results[1e306]  # an error, not a run with trades 0 and total_return 0.0
    assert (
        rc == 3
        and out == ""
        and err.strip().splitlines()
        == ["error: prices out of range for float64 arithmetic: the running sum of the closes overflows"]
    )


def _cli_run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return backtest_process("run", "--symbol", "BTCUSDT", "--window", "2", *args, **kwargs)


def test_inputs_a_retry_cannot_fix_exit_3_not_4(tmp_path):
    not_gzip = tmp_path / "candles.csv.gz"
    not_gzip.write_bytes(b"open_time,open,high,low,close,volume\n")
    folder = tmp_path / "folder.parquet"
    folder.mkdir()
    store = tmp_path / "store"
    os.makedirs(CandleStore(str(store)).month_file("BTCUSDT", "2024-01").path)  # a folder for a month file
    cases = {
        "not gzip": (["--input", str(not_gzip)], "not a readable candle file: read as CSV: zlib inflate failed"),
        "input is a folder": (["--input", str(folder)], "folder.parquet is a folder, not a file"),
        "month file is a folder": (["--data-url", str(store)], "part-0.parquet is a folder, not a file"),
    }
    for name, (args, message) in cases.items():
        proc = _cli_run(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 3 and proc.stdout == "" and len(lines) == 1 and message in lines[0], (name, proc)


def test_gzipped_csv_input_is_read(capsys, store, tmp_path):
    import gzip

    candles = CandleStore(store).read("BTCUSDT").candles.slice(0, 100)
    rows = ["open_time,open,high,low,close,volume"] + [
        f"{t},{o!r},{h!r},{lo!r},{c!r},{v!r}"
        for t, o, h, lo, c, v in zip(
            *(getattr(candles, n).tolist() for n in ("open_time", "open", "high", "low", "close", "volume")),
            strict=True,
        )
    ]
    path = tmp_path / "candles.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    rc, out, err = run_cli(capsys, "--symbol", "BTCUSDT", "--input", str(path), "--window", "24")
    assert rc == 0, err
    assert json.loads(out)["bars"] == 100


def test_an_endless_input_is_refused_after_a_bounded_read():
    """/dev/zero is refused after a bounded read, not read until the OOM killer stops the job."""
    import resource

    def limit_memory() -> None:  # 1.5 GiB of address space: an unbounded read would fail
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**29, 3 * 2**29))

    proc = _cli_run("--input", "/dev/zero", preexec_fn=limit_memory)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 3 and proc.stdout == "" and len(lines) == 1
    assert lines[0] == "error: /dev/zero is larger than 256 MiB: not a file this job reads"


def test_a_file_url_with_a_host_is_refused(capsys, store, tmp_path):
    rc, out, err = run_cli(
        capsys, "--symbol", "BTCUSDT", "--data-url", store, "--window", "24", "--results-url", "file://tmp/x"
    )
    assert rc == 3 and out == "" and "file URL file://tmp/x names a host 'tmp'" in err
    assert not os.path.exists("/x")


# -- window sweeps, hold-out, a chunk of pairs ---------------------------------------------------


def test_window_lists_and_ranges():
    assert parse_windows("5d,10d,360") == [("5d", 120), ("10d", 240), ("360", 360)]
    assert [bars for _, bars in parse_windows("1d:60d:1d")] == list(range(24, 1441, 24))
    assert parse_windows("12h:2d:12h") == [("12h", 12), ("1d", 24), ("36h", 36), ("2d", 48)]
    for bad in ("5d:1d:1d", "1d:2d", "1d:2d:0", "1d:2000d:1h"):
        with pytest.raises(InputError):
            parse_windows(bad)
    # What --window goes through: sma_trend's window parameter (a grid may hold up to
    # MAX_COMBINATIONS windows, so 1d:2000d:1h is a valid grid; a window beyond its bounds is not).
    window = get("sma_trend").param("window")
    assert window.parse_values("5d,10d,360") == [("5d", 120), ("10d", 240), ("360", 360)]
    assert [bars for _, bars in window.parse_values("1d:60d:1d")] == list(range(24, 1441, 24))
    assert window.parse_values("12h:2d:12h") == [("12h", 12), ("1d", 24), ("36h", 36), ("2d", 48)]
    for bad in ("5d:1d:1d", "1d:2d", "1d:2d:0", "1d:5000d:1d", "1:5d:1"):
        with pytest.raises(InputError):
            window.parse_values(bad)


def test_sweep_equals_single_window_runs(capsys, store):
    base = ["--symbol", "BTCUSDT", "--data-url", store, "--start", "2024-03-01", "--end", "2024-05-01"]
    _, (sweep,) = run_json(capsys, *base, "--window", "2d,5d,15d", "--select-by", "sharpe")
    assert [item["params"] for item in sweep["sweep"]] == [
        {"window": "2d", "window_bars": 48},
        {"window": "5d", "window_bars": 120},
        {"window": "15d", "window_bars": 360},
    ]
    assert sweep["grid"] == {
        "values": {"window": "2d,5d,15d"},
        "execution": {},
        "combinations": 3,
        "skipped": 0,
        "holdout_days": 0,
        "select_by": "sharpe",
        "trials": 3,
        "sr0": sweep["grid"]["sr0"],  # its value: tests/test_research_stats.py
    }
    assert sweep["selection"] == "in_sample_best" and isinstance(sweep["grid"]["sr0"], float)
    for item in sweep["sweep"]:
        _, (alone,) = run_json(capsys, *base, "--window", item["params"]["window"])
        assert alone["params"] == {**item["params"], "fee_bps": 10.0}
        for metric in ("total_return", "sharpe", "max_drawdown", "trades", "bars"):
            assert item[metric] == alone[metric], (item["params"], metric)
    best = max(sweep["sweep"], key=lambda item: item["sharpe"])
    assert sweep["best"] == best["params"] and sweep["sharpe"] == best["sharpe"]
    assert sweep["params"] == {**best["params"], "fee_bps": 10.0}  # the top-level params are the chosen one's


def test_holdout_splits_in_and_out_of_sample(capsys, store):
    base = ["--symbol", "ETHUSDT", "--data-url", store, "--fee-bps", "10"]
    _, (result,) = run_json(
        capsys, *base, "--start", "2024-03-01", "--end", "2024-05-01", "--window", "1d,3d", "--holdout-days", "10"
    )
    assert result["split"] == "2024-04-21T00:00:00Z"
    for item in result["sweep"]:
        _, (inside,) = run_json(
            capsys, *base, "--start", "2024-03-01", "--end", "2024-04-21", "--window", item["params"]["window"]
        )
        _, (outside,) = run_json(
            capsys, *base, "--start", "2024-04-21", "--end", "2024-05-01", "--window", item["params"]["window"]
        )
        assert item["total_return"] == inside["total_return"] and item["bars"] == inside["bars"]
        assert item["oos"]["total_return"] == outside["total_return"] and item["oos"]["bars"] == 10 * 24
    best = max(result["sweep"], key=lambda item: item["total_return"])
    assert result["best"] == best["params"] and result["selection"] == "holdout"
    assert {k: v for k, v in result["oos"].items() if k != "trade_stats"} == best["oos"]
    assert result["grid"]["holdout_days"] == 10 and result["grid"]["select_by"] == "total_return"


def test_one_failing_pair_in_a_chunk_keeps_the_others(capsys, store, tmp_path, monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setenv("BACKTEST_JOB_NAME", "job-1")
    monkeypatch.setenv("BACKTEST_JOB_VCPU", "0.5")
    monkeypatch.setenv("BACKTEST_JOB_MEMORY_MIB", "1024")
    code, lines = run_json(
        capsys, "--symbol", "BTCUSDT,DOGEUSDT,ETHUSDT", "--data-url", store, "--start", "2024-04-01",
        "--results-url", str(results),
    )  # fmt: skip
    assert code == 3
    assert [line["symbol"] for line in lines] == ["BTCUSDT", "DOGEUSDT", "ETHUSDT"]
    assert "no candles stored for DOGEUSDT" in lines[1]["error"]
    assert (results / "BTCUSDT.json").exists() and (results / "ETHUSDT.json").exists()
    assert not (results / "DOGEUSDT.json").exists()
    assert json.loads((results / "DOGEUSDT.error.json").read_text())["exit_code"] == 3
    record = json.loads((results / "_jobs" / "job-1.json").read_text())
    assert record["symbols"] == ["BTCUSDT", "DOGEUSDT", "ETHUSDT"] and record["failed"] == ["DOGEUSDT"]
    assert record["vcpu"] == 0.5 and record["memory_mib"] == 1024 and record["wall_seconds"] > 0
