"""The run history (`backtest_airflow.report.history`, `history_sql`): pointers, the previous run,
the changes since it, and the DuckDB queries, on a store with several dates, a re-run, a failed
run and a missing date."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from backtest_airflow import layout
from backtest_airflow.report import history, history_sql

# date -> [(run id, succeeded, {symbol: (rank, status, position, params, total_return)})]
RUNS = {
    "2026-11-01": [("r1", True, {"BTCUSDT": (1, "ok", "long", "window=1d", 0.10), "ETHUSDT": (2, "ok", "flat", "window=2d", 0.05)})],
    "2026-11-02": [
        ("r2", True, {"BTCUSDT": (2, "ok", "long", "window=1d", 0.01), "ETHUSDT": (1, "ok", "long", "window=2d", 0.07)}),
        ("r2b", True, {"BTCUSDT": (1, "ok", "flat", "window=3d", 0.12), "ETHUSDT": (2, "ok", "long", "window=2d", 0.08)}),
    ],
    "2026-11-03": [("r3", False, {"BTCUSDT": (1, "ok", "short", "window=9d", 0.99)})],  # failed: no pointer
    "2026-11-04": [("r4", True, {"ETHUSDT": (1, "ok", "short", "window=1d", 0.20), "SOLUSDT": (None, "failed: no result", None, None, None)})],
}  # fmt: skip


def leaderboard(rows: dict) -> pd.DataFrame:
    records = [
        {"rank": r, "symbol": s, "strategy": "sma_trend", "status": st, "position_now": p, "next_params": q,
         "total_return": tr}
        for s, (r, st, p, q, tr) in rows.items()
    ]  # fmt: skip
    return pd.DataFrame(records).astype({"rank": "Int64"})


@pytest.fixture
def store(tmp_path):
    data_url = str(tmp_path / "store")
    for date, runs in RUNS.items():
        for run_id, ok, rows in runs:
            folder = tmp_path / "store" / "results" / layout.DAG_ID / f"date={date}" / f"run={run_id}"
            folder.mkdir(parents=True)
            leaderboard(rows).to_parquet(folder / layout.LEADERBOARD_PARQUET)
            if ok:
                history.write_pointer(data_url, date, run_id)
    return data_url


def test_pointers_name_each_dates_latest_successful_run(store):
    assert [(r.date, r.run) for r in history.latest_runs(store, "2026-11-30")] == [
        ("2026-11-01", "r1"), ("2026-11-02", "r2b"), ("2026-11-04", "r4"),
    ]  # fmt: skip
    assert history.read_pointer(store, "2026-11-03") is None  # the failed run shadows nothing
    with open(f"{store}/results/{layout.DAG_ID}/date=2026-11-02/{layout.LATEST_JSON}") as f:
        pointer = json.load(f)
    assert pointer["results_url"] == layout.results_url(store, "2026-11-02", "r2b")
    # the previous run of 11-04 is 11-02's re-run: 11-03 has no successful run
    assert history.previous_run(store, "2026-11-04").run == "r2b"
    assert history.previous_run(store, "2026-11-02").run == "r1"
    assert history.previous_run(store, "2026-11-01") is None
    assert [r.date for r in history.latest_runs(store, "2026-11-04", runs=2)] == ["2026-11-02", "2026-11-04"]


def test_changes_against_the_previous_run(store):
    current = history.read_leaderboard(layout.results_url(store, "2026-11-04", "r4"))
    previous = history.read_leaderboard(history.previous_run(store, "2026-11-04").results_url)
    board, missing = history.changes(current, previous, "total_return")
    eth = board[board["symbol"] == "ETHUSDT"].iloc[0]
    assert eth["rank_prev"] == 2 and eth["rank_change"] == 1  # moved up from 2 to 1
    assert eth["position_prev"] == "long" and eth["position_now"] == "short"
    assert eth["params_prev"] == "window=2d" and eth["metric_prev"] == 0.08
    assert eth["metric_change"] == pytest.approx(0.20 - 0.08)
    assert eth["change"] == ""
    sol = board[board["symbol"] == "SOLUSDT"].iloc[0]
    assert sol["change"] == "new" and pd.isna(sol["rank_prev"])  # new to the run: said, not zero
    assert missing == [{"symbol": "BTCUSDT", "strategy": "sma_trend"}]  # in the previous run, not in this one
    first, none = history.changes(previous, None, "total_return")
    assert none == [] and first["rank_prev"].isna().all()


def test_read_history_concatenates_the_latest_runs(store):
    frame = history.read_history(store, "2026-11-30", ["symbol", "rank", "position_now", "nonexistent"])
    assert list(frame.columns) == ["symbol", "rank", "position_now", "date", "run"]
    btc = frame[frame["symbol"] == "BTCUSDT"]
    assert btc[["date", "run", "position_now"]].values.tolist() == [
        ["2026-11-01", "r1", "long"], ["2026-11-02", "r2b", "flat"],
    ]  # fmt: skip


def test_duckdb_reads_the_same_history(store):
    latest = history_sql.query(history_sql.latest_runs_sql(store))
    assert latest[["date", "run"]].values.tolist() == [
        ["2026-11-01", "r1"],
        ["2026-11-02", "r2b"],
        ["2026-11-04", "r4"],
    ]
    rows = history_sql.query(history_sql.pair_history_sql(store), symbol="BTCUSDT")
    assert rows[["date", "run", "rank", "position_now", "metric"]].values.tolist() == [
        ["2026-11-01", "r1", 1, "long", 0.10], ["2026-11-02", "r2b", 1, "flat", 0.12],
    ]  # fmt: skip
    eth = history_sql.query(history_sql.pair_history_sql(store), symbol="ETHUSDT")
    assert eth["date"].tolist() == ["2026-11-01", "2026-11-02", "2026-11-04"]
    # against the pandas reader of the same store
    frame = history.read_history(store, "2026-11-30", ["symbol", "rank", "total_return"])
    expected = frame[frame["symbol"] == "ETHUSDT"][["date", "total_return"]].values.tolist()
    assert eth[["date", "metric"]].values.tolist() == expected
    with pytest.raises(ValueError):
        history_sql.pair_history_sql(store, "x; DROP")


def settings_board(
    fee: float, window_days: int, params: str, combinations: int = 1, status: str = "ok"
) -> pd.DataFrame:
    start = pd.Timestamp("2026-01-01", tz="UTC")
    return pd.DataFrame([{
        "symbol": "BTCUSDT", "strategy": "sma_trend", "status": status, "fee_bps": fee, "slippage_bps": 0.0,
        "combinations": combinations, "params": params, "start": start.isoformat(),
        "end": (start + pd.Timedelta(days=window_days)).isoformat(),
    }])  # fmt: skip


def test_settings_changes_name_each_setting_that_differs():
    before, same = settings_board(10.0, 365, "window=15d"), settings_board(10.0, 365, "window=15d")
    assert history.settings_changes(same, before) == []
    assert history.settings_changes(same, None) == []
    changed = settings_board(5.0, 180, "window=20d")
    assert history.settings_changes(changed, before) == [
        "sma_trend: fee_bps 10.0 → 5.0", "sma_trend: window 365d → 180d", "sma_trend: params window=15d → window=20d",
    ]  # fmt: skip
    # a grid's chosen params are a result, not a setting; its size is a setting
    grid_before, grid_now = settings_board(10.0, 365, "fast=1d", 9), settings_board(10.0, 365, "fast=2d", 25)
    assert history.settings_changes(grid_now, grid_before) == ["sma_trend: combinations 9 → 25"]
    # a failed row has no settings of its own: nothing to compare
    assert history.settings_changes(settings_board(5.0, 365, "window=15d", status="failed: x"), before) == []
