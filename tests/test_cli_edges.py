"""The rough edges a new user hit (issue 20, items 5 and 6): each bad input is one `error:` line
on stderr, the exact exit code, no traceback and nothing written; `make demo`'s options and errors;
`list-strategies` showing each parameter's bounds and help."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from backtest.data.candles import SCHEMA
from backtest.data.synthetic import synthetic_candles
from backtest.errors import EXIT_DATA, EXIT_INPUT, EXIT_STDOUT_CLOSED, from_os_error
from backtest.params import parse_bars, parse_fee_bps, parse_time_ms
from backtest.strategy import Param, get, names
from tests.support import REPO, backtest_process

STORE_RUN = ("--symbol", "BTCUSDT", "--start", "2024-03-01", "--end", "2024-04-01")

# A user's strategy with a plain whole-number parameter, `k`.
K_HIGH = '''
import numpy as np

from backtest.strategy import Param, strategy


@strategy("k_high", params=[Param("k", 5, low=1, high=100, help="bars back")], warmup=lambda p: p["k"])
def k_high(candles, k):
    """long while the close is above the close k bars before"""
    out = np.zeros(len(candles), dtype=bool)
    out[k:] = candles.close[k:] > candles.close[:-k]
    return out
'''


def one_error(proc: subprocess.CompletedProcess, code: int) -> str:
    """The exit code is `code`, stdout is empty, stderr has exactly one `error:` line and no
    traceback (log lines aside); returns that line."""
    assert proc.returncode == code, (proc.returncode, proc.stdout[:300], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == "", proc.stdout[:300]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


# -- 1. refresh --history-days --------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--history-days", "10000000"], "invalid --history-days 10000000: must be from 1 to 36500 (100 years)"),
        (
            ["--history-days", "36500"],
            "--history-days 36500 reaches back before 1970-01-01T00:00:00Z, the store's earliest time: "
            "at most 19723 days before 2024-01-01T00:00:00Z",
        ),
        (["--since", "1969-12-31"], "--since 1969-12-31T00:00:00Z is before 1970-01-01T00:00:00Z"),
    ],
)
def test_refresh_history_beyond_the_stores_earliest_date_is_exit_2(tmp_path, args, message):
    store = tmp_path / "store"
    proc = backtest_process(
        "refresh", "--symbol", "BTCUSDT", "--data-url", str(store), "--until", "2024-01-01", "--source", "synthetic",
        *args,
    )  # fmt: skip
    assert one_error(proc, EXIT_INPUT).startswith(f"error: {message}")
    assert not store.exists()


# -- 2. a hold-out whose in-sample part cannot hold the lookback -----------------------------


def test_a_holdout_whose_in_sample_part_is_shorter_than_the_lookback_is_exit_3(store, tmp_path):
    results = tmp_path / "results"
    proc = backtest_process(
        "run", "--symbol", "BTCUSDT", "--data-url", store, "--start", "2024-01-01", "--end", "2024-03-01",
        "--holdout-days", "50", "--window", "30d", "--results-url", str(results),
    )  # fmt: skip
    line = one_error(proc, EXIT_DATA)
    assert line == (
        "error: BTCUSDT: sma_trend window=30d needs 720 candles up to the end of the in-sample part (the 50-day "
        "hold-out's split, 2024-01-11T00:00:00Z), only 240 are available"
    )
    assert not results.exists()


def test_a_short_in_sample_part_warmed_up_by_the_candles_before_it_runs(store):
    """The guard counts the warm-up read before the window, as the walk-forward's does."""
    proc = backtest_process(
        "run", "--symbol", "BTCUSDT", "--data-url", store, "--start", "2024-02-15", "--end", "2024-03-01",
        "--holdout-days", "10", "--window", "30d",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["grid"]["holdout_days"] == 10


# -- 3. --results-url naming a file -----------------------------------------------------------


@pytest.mark.parametrize("below", ["", "sub/folder"])
def test_results_url_naming_a_file_is_a_permanent_exit_3(store, tmp_path, below):
    blocker = tmp_path / "results.txt"
    blocker.write_text("mine")
    proc = backtest_process("run", *STORE_RUN, "--data-url", store, "--results-url", str(blocker / below))
    line = one_error(proc, EXIT_DATA)  # not 4: a retry finds the same file in the way
    assert line.startswith(f"error: {blocker} is a file, not a folder: cannot write {blocker / below}")
    assert blocker.read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["results.txt", "store"]


def test_a_file_in_the_way_is_a_permanent_os_error():
    assert from_os_error(FileExistsError(errno.EEXIST, "File exists")).exit_code == EXIT_DATA


# -- 4. options given empty --------------------------------------------------------------------


EMPTY = "is empty: give it a value or leave it out"


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", *STORE_RUN, "--walk-forward", ""], f"--walk-forward {EMPTY}"),
        (["run", *STORE_RUN, "--start", ""], f"--start {EMPTY}"),
        (["run", *STORE_RUN, "--end", ""], f"--end {EMPTY}"),
        (["run", *STORE_RUN, "--results-url", ""], f"--results-url {EMPTY}"),
        (["run", *STORE_RUN, "--param", ""], f"--param {EMPTY}"),
        (["run", *STORE_RUN, "--holdout-days", ""], "invalid --holdout-days '': must be a whole number (e.g. 30)"),
        (["refresh", "--symbol", "BTCUSDT", "--until", "2024-03-01", "--since", ""], f"--since {EMPTY}"),
        (["check-strategy", "sma_cross", "--input", ""], f"--input {EMPTY}"),
    ],
    ids=["walk-forward", "start", "end", "results-url", "param", "holdout-days", "since", "check-input"],
)
def test_an_option_given_empty_is_exit_2(store, tmp_path, args, message):
    results = tmp_path / "results"
    if args[0] == "run":
        args = [*args, "--data-url", store, *(["--results-url", str(results)] if "--results-url" not in args else [])]
    elif args[0] == "refresh":
        args = [*args, "--data-url", str(results), "--source", "synthetic"]
    assert one_error(backtest_process(*args), EXIT_INPUT) == f"error: {message}"
    assert not results.exists()


# -- 5. numbers not written plainly -------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strategy", "k_high", "--param", "k=1_0"], "invalid k '1_0': must be a whole number, in digits (e.g. 10)"),
        (["--strategy", "k_high", "--param", "k=1e1"], "invalid k '1e1': must be a whole number, in digits (e.g. 10)"),
        (["--strategy", "k_high", "--param", "k=1:9:2_0"], "invalid k step '2_0': must be a whole number"),
        (["--strategy", "rsi_reversion", "--param", "lower=2_0"], "invalid lower '2_0': must be a number, in digits"),
        (["--fee-bps", "1_0"], "invalid fee '1_0': must be a number of basis points (e.g. 10)"),
        (["--holdout-days", "1_0"], "invalid --holdout-days '1_0': must be a whole number (e.g. 30)"),
    ],
)
def test_numbers_with_underscores_or_an_exponent_for_a_whole_number_are_exit_2(store, tmp_path, args, message):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "k_high.py").write_text(K_HIGH)
    env = {**os.environ, "BACKTEST_STRATEGY_PATH": str(folder)}
    results = tmp_path / "results"
    proc = backtest_process("run", *STORE_RUN, "--data-url", store, *args, "--results-url", str(results), env=env)
    assert one_error(proc, EXIT_INPUT).startswith(f"error: {message}")
    assert not results.exists()


def test_numbers_are_read_only_when_written_plainly():
    from backtest.params import parse_number

    whole, number = Param("k", 5, low=-100, high=100), Param("x", 0.5, low=-1e9, high=1e9, kind=float)
    assert [whole.parse(t) for t in ("10", " 12 ", "+5", "-3", 7)] == [10, 12, 5, -3, 7]
    assert [number.parse(t) for t in ("0.5", ".5", "2.", "1e-3", "2E1", "-4", 3)] == [
        0.5,
        0.5,
        2.0,
        0.001,
        20.0,
        -4.0,
        3.0,
    ]
    for text in ("1_0", "1e3", "1.0", "0x10", "\u0661\u0660", "\uff11", "", True):
        assert parse_number(text, int) is None, text
    for text in ("1_0.5", "1e3_0", "\u0661", "0x1p3", "", "1e", False):
        assert parse_number(text, float) is None, text
    assert parse_fee_bps("2.5") == 2.5 and parse_fee_bps(1e-05) == 1e-05 and parse_fee_bps("1e-05") == 1e-05


# -- 6. messages --------------------------------------------------------------------------------


def test_a_zero_or_negative_duration_says_it_must_be_positive(store):
    with pytest.raises(Exception, match=r"invalid bar count '0d': must be positive, at least 1 bar \(1h\)"):
        parse_bars("0d")
    with pytest.raises(Exception, match=r"invalid bar count '-1d': must be positive"):
        parse_bars("-1d")
    proc = backtest_process("run", *STORE_RUN, "--data-url", store, "--strategy", "sma_cross", "--param", "fast=0d")
    assert one_error(proc, EXIT_INPUT) == "error: invalid fast '0d': must be from 1 to 100000 bars"
    proc = backtest_process("run", *STORE_RUN, "--data-url", store, "--walk-forward", "0d:10d")
    assert one_error(proc, EXIT_INPUT).startswith(
        "error: invalid walk-forward '0d:10d': the training window must be 24 to 100000 hourly bars"
    )


def _write_csv(path, table: pa.Table) -> None:
    pacsv.write_csv(table, path)


def _candles(hours: int) -> pa.Table:
    start = parse_time_ms("2024-01-01")
    return synthetic_candles("BTCUSDT", start, start + hours * 3_600_000).to_table()


def test_a_header_only_csv_has_no_candles(tmp_path):
    csv = tmp_path / "btc.csv"
    csv.write_text("open_time,open,high,low,close,volume\n")
    line = one_error(backtest_process("run", "--symbol", "BTCUSDT", "--input", str(csv)), EXIT_DATA)
    assert line == f"error: {csv}: the file has no candles (only a header)"
    empty = tmp_path / "btc.parquet"
    pq.write_table(SCHEMA.empty_table(), empty)
    line = one_error(backtest_process("run", "--symbol", "BTCUSDT", "--input", str(empty)), EXIT_DATA)
    assert line == f"error: {empty}: the file has no candles (no rows)"


def test_a_bad_candle_is_named_by_its_line_in_a_csv_and_its_row_from_1_in_parquet(tmp_path):
    table = _candles(5)
    times = table.column("open_time").to_pylist()
    times[3] = times[2]  # the 4th candle repeats the 3rd: CSV line 5 (the header is line 1), Parquet row 4
    table = table.set_column(0, "open_time", pa.array(times, SCHEMA.field("open_time").type))
    csv, parquet = tmp_path / "btc.csv", tmp_path / "btc.parquet"
    _write_csv(csv, table)
    pq.write_table(table, parquet)
    lines = csv.read_text().splitlines()
    assert lines[0].startswith('"open_time"') and lines[4].split(",")[0] == lines[3].split(",")[0]
    line = one_error(backtest_process("run", "--symbol", "BTCUSDT", "--input", str(csv)), EXIT_DATA)
    assert line == f"error: {csv}: duplicate open_time at line 5"
    line = one_error(backtest_process("run", "--symbol", "BTCUSDT", "--input", str(parquet)), EXIT_DATA)
    assert line == f"error: {parquet}: duplicate open_time at row 4"


# -- 7, 8. make demo: DEMO_ARGS and its errors ------------------------------------------------------


def test_demo_args_are_split_as_typed_with_json_as_one_word():
    from backtest_airflow.local.demo import split_args

    natural = '--strategies [{"name": "sma_cross", "params": {"fast": "1d,2d"}}, {"name": "rsi_reversion"}]'
    json_word = '[{"name": "sma_cross", "params": {"fast": "1d,2d"}}, {"name": "rsi_reversion"}]'
    assert split_args(natural + " --date 2026-06-01") == ["--strategies", json_word, "--date", "2026-06-01"]
    assert split_args(f"--strategies '{json_word}'") == ["--strategies", json_word]  # the shell's quoting too
    assert split_args(f"--strategies={json_word}") == [f"--strategies={json_word}"]
    assert split_args(f"--param strategies={json_word} --days 2") == [
        "--param",
        f"strategies={json_word}",
        "--days",
        "2",
    ]
    assert split_args("  --window '5d, 10d' --walk-forward 60d:20d ") == [
        "--window",
        "5d, 10d",
        "--walk-forward",
        "60d:20d",
    ]
    assert split_args("") == [] and split_args("--help") == ["--help"]
    for bad, message in (
        ("--strategies [{name: sma_cross}]", "not valid JSON: Expecting property name enclosed in double quotes"),
        ("--window '5d", "a ' quote is not closed"),
    ):
        with pytest.raises(Exception, match=message):
            split_args(bad)


def test_make_demo_hands_demo_args_to_the_demo_as_typed(tmp_path):
    """The Makefile passes DEMO_ARGS in the environment (not expanded into the shell command)."""
    if shutil.which("make") is None:
        pytest.skip("no make")
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nprintf "%s" "$*" > "$OUT.argv"\nprintf "%s" "$DEMO_ARGS" > "$OUT.env"\n')
    fake.chmod(0o755)
    typed = '--strategies [{"name": "sma_cross"}, {"name": "rsi_reversion"}]'
    out = tmp_path / "out"
    proc = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "demo", f"PY={fake}", f"DEMO_ARGS={typed}",
         f"DEMO_HOME={tmp_path / 'demo'}"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "OUT": str(out)}, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.argv").read_text() == "-m backtest_airflow.local.demo"
    assert (tmp_path / "out.env").read_text() == typed


@pytest.mark.parametrize("how", ["argv", "DEMO_ARGS"])
def test_demo_with_an_unknown_strategy_prints_plans_one_line_and_exits_2(tmp_path, monkeypatch, capsys, how):
    from backtest_airflow.local import demo

    monkeypatch.setenv("BACKTEST_DATA_URL", str(tmp_path / "store"))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    given = ["--strategies", '[{"name": "nope"}, {"name": "sma_cross", "params": {"fast": "0d"}}]']
    if how == "argv":
        monkeypatch.delenv("DEMO_ARGS", raising=False)
        code = demo.main(given)
    else:
        monkeypatch.setenv("DEMO_ARGS", " ".join(given))
        code = demo.main([])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.splitlines() == [
        "error: sma_cross fast: invalid fast '0d': must be from 1 to 100000 bars; unknown strategy(s) 'nope': "
        f"registered are {', '.join(names())}"
    ]
    assert not (tmp_path / "store").exists() and not (tmp_path / "airflow").exists()  # before the DB and the DAG


def test_demo_params_reach_plan_as_json_or_text(tmp_path, monkeypatch, capsys):
    """`--param NAME=VALUE` sets any param of the form: plan checks them (here: refuses them)
    before the metadata DB and the DAG start, a number as a number and a word as text."""
    from backtest_airflow.local import demo

    monkeypatch.setenv("BACKTEST_DATA_URL", str(tmp_path / "store"))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.delenv("DEMO_ARGS", raising=False)
    code = demo.main(["--param", "holdout_days=3650", "--param", "rank_on=sideways", "--param", "holdout_dayz=3"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and len(captured.err.splitlines()) == 1
    for problem in ("holdout_days", "3650", "rank_on", "'sideways'", "unknown param(s) 'holdout_dayz'"):
        assert problem in captured.err, problem
    assert not (tmp_path / "store").exists() and not (tmp_path / "airflow").exists()
    with pytest.raises(SystemExit) as usage:  # not NAME=VALUE: argparse's usage error
        demo.main(["--param", "holdout_days"])
    assert usage.value.code == 2 and "not NAME=VALUE: 'holdout_days'" in capsys.readouterr().err


# -- 9. list-strategies shows bounds and help ----------------------------------------------------------


def test_list_strategies_shows_each_parameters_bounds_and_help():
    proc = backtest_process("list-strategies")
    assert proc.returncode == 0, proc.stderr
    by_name = {item["name"]: item for item in json.loads(proc.stdout)}
    assert by_name["sma_cross"]["params"][0] == {
        "name": "fast", "type": "int", "bars": True, "default": "1d", "low": 1, "high": 100000, "help": "fast SMA window",
    }  # fmt: skip
    for item in by_name.values():
        for param in item["params"]:
            assert {"low", "high", "help"} <= set(param), (item["name"], param)
            strategy_param = get(item["name"]).param(param["name"])
            assert (param["low"], param["high"], param["help"]) == (
                strategy_param.low,
                strategy_param.high,
                strategy_param.help,
            )


@pytest.mark.parametrize("unbuffered", ["1", None])
def test_a_reader_that_leaves_early_is_exit_141_without_a_message(unbuffered):
    """`list-strategies | head`: the pipe's reader is gone before the first write (its end is
    closed before the process starts), so every write fails with EPIPE; with Python's stdout
    buffered too (PYTHONUNBUFFERED unset), where a short output would only fail at exit."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "backtest", "list-strategies"], stdout=write_end, stderr=subprocess.PIPE,
            text=True, cwd=REPO, timeout=120, env=env,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (EXIT_STDOUT_CLOSED, "")


# -- the job's own records ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../evil", "a/b", "", "x" * 129, "dot.ted"])
def test_a_job_name_that_is_not_a_plain_name_is_exit_2_before_anything_is_written(store, tmp_path, name):
    results = tmp_path / "deep" / "results"
    env = {**os.environ, "BACKTEST_JOB_NAME": name}
    proc = backtest_process("run", *STORE_RUN, "--data-url", store, "--results-url", str(results), env=env)
    if name == "":  # unset, as the DAG never sets it empty: a plain run
        assert proc.returncode == 0 and not (results / "_jobs").exists()
        return
    line = one_error(proc, EXIT_INPUT)
    assert line == f"error: invalid BACKTEST_JOB_NAME {name!r}: letters, digits, '-' and '_' only (at most 128)"
    assert not (tmp_path / "deep").exists() and not (tmp_path / "evil.json").exists()


def test_a_retry_leaves_only_its_own_verdict_for_a_pair(tmp_path):
    """A pair's result and its error file never stand side by side: the later write removes the other,
    so a retried chunk's leaderboard neither ranks a stale result nor lists a stale failure."""
    from backtest import job

    table = pa.table({"equity": [1.0, 1.1]})
    files = job.Curves(table, trades=table, oos_equity=table)
    job.write_result(str(tmp_path), {"symbol": "BTCUSDT", "total_return": 0.1}, files)
    job.write_error(str(tmp_path), "BTCUSDT", "strategy faulty raised ValueError", 5)
    assert sorted(os.listdir(tmp_path)) == ["BTCUSDT.error.json"]
    job.write_result(str(tmp_path), {"symbol": "BTCUSDT", "total_return": 0.1}, files)
    whole = ["BTCUSDT.equity.parquet", "BTCUSDT.json", "BTCUSDT.oos.equity.parquet", "BTCUSDT.trades.parquet"]
    assert sorted(os.listdir(tmp_path)) == whole
    job.write_result(str(tmp_path), {"symbol": "BTCUSDT", "total_return": 0.1}, job.Curves(table))  # no hold-out now
    assert sorted(os.listdir(tmp_path)) == ["BTCUSDT.equity.parquet", "BTCUSDT.json"]
