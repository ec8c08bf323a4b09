"""Parameter sweeps, hold-out, chunked jobs and cost accounting (issue: scale)."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime

import pandas as pd
import pytest

from backtest.cli import main
from backtest.errors import InputError
from backtest.params import parse_time_ms, parse_windows
from backtest.store import CandleStore
from backtest.synthetic import synthetic_candles
from backtest_airflow import leaderboard
from backtest_airflow.planning import MAX_JOBS, job_kwargs, job_pairs, make_plan
from tests.airflow_helpers import environment, load_daily_dag

SINCE, UNTIL = parse_time_ms("2024-01-01"), parse_time_ms("2024-05-01")
PRICES = {"vcpu_hour": 0.04048, "gb_hour": 0.004445, "spot_vcpu_hour": 0.0129159, "spot_gb_hour": 0.001418}


@pytest.fixture
def store(tmp_path) -> str:
    url = str(tmp_path / "store")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        CandleStore(url).write(symbol, synthetic_candles(symbol, SINCE, UNTIL), "synthetic")
    return url


def run_json(capsys, *args: str) -> tuple[int, list[dict]]:
    code = main(["run", *args])
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines()]


def test_window_lists_and_ranges():
    assert parse_windows("5d,10d,360") == [("5d", 120), ("10d", 240), ("360", 360)]
    assert [bars for _, bars in parse_windows("1d:60d:1d")] == list(range(24, 1441, 24))
    assert parse_windows("12h:2d:12h") == [("12h", 12), ("1d", 24), ("36h", 36), ("2d", 48)]
    for bad in ("5d:1d:1d", "1d:2d", "1d:2d:0", "1d:2000d:1h"):
        with pytest.raises(InputError):
            parse_windows(bad)


def test_sweep_equals_single_window_runs(capsys, store):
    base = ["--symbol", "BTCUSDT", "--data-url", store, "--start", "2024-03-01", "--end", "2024-05-01"]
    _, (sweep,) = run_json(capsys, *base, "--window", "2d,5d,15d", "--select-by", "sharpe")
    assert [item["window"] for item in sweep["sweep"]] == ["2d", "5d", "15d"]
    for item in sweep["sweep"]:
        _, (alone,) = run_json(capsys, *base, "--window", item["window"])
        for metric in ("total_return", "sharpe", "max_drawdown", "trades", "bars"):
            assert item[metric] == alone[metric], (item["window"], metric)
    best = max(sweep["sweep"], key=lambda item: item["sharpe"])
    assert sweep["best_window"] == best["window"] and sweep["sharpe"] == best["sharpe"]


def test_holdout_splits_in_and_out_of_sample(capsys, store):
    base = ["--symbol", "ETHUSDT", "--data-url", store, "--fee-bps", "10"]
    _, (result,) = run_json(
        capsys, *base, "--start", "2024-03-01", "--end", "2024-05-01", "--window", "1d,3d", "--holdout-days", "10"
    )
    assert result["split"] == "2024-04-21T00:00:00Z"
    for item in result["sweep"]:
        _, (inside,) = run_json(
            capsys, *base, "--start", "2024-03-01", "--end", "2024-04-21", "--window", item["window"]
        )
        _, (outside,) = run_json(
            capsys, *base, "--start", "2024-04-21", "--end", "2024-05-01", "--window", item["window"]
        )
        assert item["total_return"] == inside["total_return"] and item["bars"] == inside["bars"]
        assert item["oos"]["total_return"] == outside["total_return"] and item["oos"]["bars"] == 10 * 24
    best = max(result["sweep"], key=lambda item: item["total_return"])
    assert result["best_window"] == best["window"] and result["oos"] == best["oos"]


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


def test_thousand_pairs_make_few_jobs():
    pairs = [f"P{i:04d}USDT" for i in range(1000)]
    day = datetime.fromisoformat("2026-10-01T00:00:00+00:00")
    plan = make_plan({"pairs": pairs}, "s3://b/d", "dag", "scheduled__x", day)
    assert len(plan.chunks) == MAX_JOBS == 40 and {len(c) for c in plan.chunks} == {25}
    jobs = job_kwargs(plan, "s3://b/d", "scheduled__x")
    assert len({job["job_name"] for job in jobs}) == 40 and max(len(job["job_name"]) for job in jobs) <= 128
    assert [pair for job in jobs for pair in job_pairs(job)] == pairs
    assert jobs[0]["tags"] == {"pairs": "P0000USDT +24"}
    assert 2 * len(jobs) + 2 <= 100  # refresh + backtest per chunk, plan, rank
    small = make_plan({"pairs": pairs[:10]}, "s3://b/d", "dag", "r", day)
    assert small.chunks == [[p] for p in pairs[:10]]
    chosen = make_plan({"pairs": pairs[:10], "pairs_per_job": 4}, "s3://b/d", "dag", "r", day)
    assert [len(c) for c in chosen.chunks] == [4, 4, 2]


def test_plan_rejects_inconsistent_sweep_params():
    day = datetime.fromisoformat("2026-10-01T00:00:00+00:00")
    with pytest.raises(InputError, match="needs holdout_days"):
        make_plan({"pairs": ["BTCUSDT"], "rank_on": "out_of_sample"}, "/s", "d", "r", day)
    with pytest.raises(InputError, match="must be shorter than lookback_days"):
        make_plan({"pairs": ["BTCUSDT"], "holdout_days": 30, "lookback_days": 30}, "/s", "d", "r", day)


def test_cost_summary_adds_up_job_records(tmp_path):
    results = tmp_path / "run"
    (results / "_jobs").mkdir(parents=True)
    for name, seconds in (("a", 30.0), ("b", 150.0)):
        record = {
            "job_name": name,
            "symbols": [name],
            "failed": [],
            "wall_seconds": seconds,
            "vcpu": 1,
            "memory_mib": 2048,
        }
        (results / "_jobs" / f"{name}.json").write_text(json.dumps(record))
    day = datetime.fromisoformat("2026-10-01T00:00:00+00:00")
    plan = make_plan({"pairs": ["AAUSDT", "BBUSDT"], "pairs_per_job": 1}, "/unused", "dag", "run", day)
    cost = leaderboard.cost_summary(dataclasses.replace(plan, results_url=str(results)), PRICES)
    assert cost["jobs"] == 2 and cost["vcpu_seconds"] == 180.0
    assert cost["billed_vcpu_seconds"] == 60 + 150  # one-minute minimum for the short job
    hours = 210 / 3600
    assert cost["cost_on_demand_usd"] == pytest.approx(hours * 0.04048 + hours * 2 * 0.004445, abs=1e-6)
    assert cost["cost_spot_usd"] == pytest.approx(hours * 0.0129159 + hours * 2 * 0.001418, abs=1e-6)
    assert cost["text"].startswith("2 pairs, 2 jobs, 180.0 vCPU-seconds")
    short, long = sorted(cost["per_job"], key=lambda job: job["wall_seconds"])
    assert short["billed_seconds"] == 60 and long["billed_seconds"] == 150
    assert long["cost_on_demand_usd"] == pytest.approx(150 / 3600 * (0.04048 + 2 * 0.004445))
    assert short["cost_spot_usd"] + long["cost_spot_usd"] == pytest.approx(cost["cost_spot_usd"], abs=1e-6)


@pytest.mark.slow
def test_dag_sweep_holdout_and_chunks(airflow_db, tmp_path):
    data_url = tmp_path / "store"
    dag = load_daily_dag(BACKTEST_EXECUTOR="local", BACKTEST_SOURCE="synthetic", BACKTEST_DATA_URL=str(data_url))
    pairs = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT"]
    conf = {
        "pairs": pairs,
        "window": "1d,2d,4d",
        "lookback_days": 20,
        "holdout_days": 5,
        "rank_by": "sharpe",
        "rank_on": "out_of_sample",
        "pairs_per_job": 2,
    }
    dag_run = dag.test(logical_date=datetime.fromisoformat("2026-10-01T00:00:00+00:00"), run_conf=conf)
    assert dag_run.state == "success"
    mapped = [ti for ti in dag_run.get_task_instances() if ti.task_id in ("refresh", "backtest")]
    assert len(mapped) == 2 * 3  # 5 pairs in chunks of 2: 3 refresh + 3 backtest task instances

    (folder,) = (data_url / "results" / "crypto_backtest_daily").glob("date=*/run=*")
    board = pd.read_parquet(folder / "leaderboard.parquet")
    assert len(board) == 5 * 3 and board["best"].sum() == 5
    best = board[board["best"]]
    assert best["rank"].tolist() == [1, 2, 3, 4, 5]
    assert best["oos_sharpe"].tolist() == sorted(best["oos_sharpe"], reverse=True)
    summary = json.loads((folder / "summary.json").read_text())["cost"]
    assert summary["pairs"] == 5 and summary["jobs"] == 3 and summary["vcpu_seconds"] > 0


@pytest.mark.slow
def test_dag_lists_a_failed_pair_without_losing_its_chunk(airflow_db, tmp_path, exchange_factory):
    exchange = exchange_factory(symbols=("BTCUSDT", "ETHUSDT"), now_ms=parse_time_ms("2026-06-20T12:30:00Z"))
    data_url = tmp_path / "store"
    with environment(BINANCE_API_URL=exchange.url):
        dag = load_daily_dag(BACKTEST_EXECUTOR="local", BACKTEST_SOURCE="binance", BACKTEST_DATA_URL=str(data_url))
        conf = {"pairs": ["BTCUSDT", "NOPEUSDT", "ETHUSDT"], "window": "1d", "lookback_days": 10, "pairs_per_job": 3}
        dag_run = dag.test(logical_date=datetime.fromisoformat("2026-06-20T00:00:00+00:00"), run_conf=conf)
    assert dag_run.state == "failed"
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == {
        "plan": "success",
        "jobs": "success",
        "refresh": "failed",
        "candles": "skipped",  # its one chunk failed: no pair is known fresh, no candles event
        "backtest": "failed",
        "rank": "failed",
    }
    (folder,) = (data_url / "results" / "crypto_backtest_daily").glob("date=*/run=*")
    board = pd.read_parquet(folder / "leaderboard.parquet").set_index("symbol")
    assert board.loc["BTCUSDT", "status"] == "ok" and board.loc["ETHUSDT", "status"] == "ok"
    assert board.loc["NOPEUSDT", "status"].startswith("failed: no candles stored for NOPEUSDT")
    assert board.loc["BTCUSDT", "synthetic"] == False  # noqa: E712 (numpy bool)
