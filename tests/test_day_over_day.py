"""Day over day through the real DAG (`dag.test()`): three consecutive dates, a re-run of the
middle one and a failed run; the pointer after each, the change columns against values
recomputed from the stored leaderboards, and the report's "What changed" section against the
same numbers."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from backtest.params import parse_time_ms
from backtest_airflow import layout
from tests.support import environment
from tests.support.dag import run_daily_dag

CONF = {"pairs": ["BTCUSDT", "ETHUSDT", "SOLUSDT"], "window": "1d,2d", "lookback_days": 20}
DATES = ["2026-06-18", "2026-06-19", "2026-06-20"]


def as_of(date: str) -> datetime:
    return datetime.fromisoformat(date + "T00:00:00+00:00")


def pointer(data_url, date: str) -> dict | None:
    path = data_url / "results" / layout.DAG_ID / f"date={date}" / layout.LATEST_JSON
    return json.loads(path.read_text()) if path.exists() else None


def board_of(data_url, date: str, run_id: str) -> pd.DataFrame:
    return pd.read_parquet(f"{layout.results_url(str(data_url), date, run_id)}/{layout.LEADERBOARD_PARQUET}")


@pytest.mark.slow
def test_three_dates_a_rerun_and_a_failed_run(airflow_db, tmp_path, exchange_factory):
    data_url = tmp_path / "store"
    runs = {}
    for date in DATES[:2]:
        dag_run = run_daily_dag(data_url, CONF, as_of(date))
        assert dag_run.state == "success"
        runs[date] = dag_run.run_id
        assert pointer(data_url, date)["run_id"] == dag_run.run_id  # written at the end of a successful run
    first = board_of(data_url, DATES[0], runs[DATES[0]])
    assert first["rank_prev"].isna().all() and first["position_prev"].isna().all()  # nothing before it

    rerun = run_daily_dag(data_url, CONF, as_of(DATES[1]))  # a re-run of the middle date
    assert rerun.state == "success" and pointer(data_url, DATES[1])["run_id"] == rerun.run_id
    runs[DATES[1]] = rerun.run_id

    dag_run = run_daily_dag(data_url, CONF, as_of(DATES[2]))
    assert dag_run.state == "success"
    runs[DATES[2]] = dag_run.run_id

    # a failed run of the last date (a pair with no candles on the exchange stand-in): its rank
    # writes a leaderboard and fails, and the pointer stays on the good run
    exchange = exchange_factory(symbols=("BTCUSDT",), now_ms=parse_time_ms("2026-06-20T12:30:00Z"))
    with environment(BINANCE_API_URL=exchange.url):
        failed = run_daily_dag(data_url, {**CONF, "pairs": ["NOPEUSDT"]}, as_of(DATES[2]), BACKTEST_SOURCE="binance")
    assert failed.state == "failed"
    assert (board_of(data_url, DATES[2], failed.run_id)["status"].str.startswith("failed")).all()
    assert pointer(data_url, DATES[2])["run_id"] == runs[DATES[2]]

    # the change columns of the last date's run, recomputed from the stored leaderboards: its
    # previous run is the middle date's re-run
    now = board_of(data_url, DATES[2], runs[DATES[2]]).set_index(["symbol", "strategy"])
    before = board_of(data_url, DATES[1], runs[DATES[1]]).set_index(["symbol", "strategy"])
    assert set(now.index) == set(before.index)
    for key, row in now.iterrows():
        prev = before.loc[key]
        assert row["rank_prev"] == prev["rank"] and row["rank_change"] == prev["rank"] - row["rank"]
        assert row["position_prev"] == prev["position_now"] and row["params_prev"] == prev["next_params"]
        assert row["metric_prev"] == prev["total_return"]
        assert row["metric_change"] == pytest.approx(row["total_return"] - prev["total_return"], abs=1e-15)
        assert row["change"] == ""
    middle = board_of(data_url, DATES[1], runs[DATES[1]]).set_index(["symbol", "strategy"])
    oldest = board_of(data_url, DATES[0], runs[DATES[0]]).set_index(["symbol", "strategy"])
    assert (middle["rank_prev"] == oldest.loc[middle.index, "rank"]).all()  # the re-run compared with date 1

    # the report's first section says the same
    page = (Path(layout.results_url(str(data_url), DATES[2], runs[DATES[2]])) / layout.REPORT_HTML).read_text()
    assert page.index('id="changes"') < page.index('id="leaderboard"')  # before the leaderboard
    assert f"What changed since {DATES[1]}" in page and rerun.run_id in page
    flips = [(s, t) for (s, t), r in now.iterrows() if r["position_prev"] != r["position_now"]]
    shown = re.findall(r"<li>([A-Z]+USDT) (\w+): (\w+) → (\w+)", page)
    assert sorted((s, t) for s, t, _, _ in shown) == sorted(flips)
    for symbol, strategy, old, new in shown:
        assert (old, new) == (now.loc[(symbol, strategy), "position_prev"], now.loc[(symbol, strategy), "position_now"])
    assert f"Signal changes ({len(flips)})" in page
    assert 'id="position-calendar"' in page  # three dates of history
    calendar = page[page.index('id="position-calendar"') :]
    assert all(date[5:] in calendar[:2000] for date in DATES)
    # the largest metric changes: the five largest |total_return now - then|, recomputed, in order
    deltas = {f"{s} {t}": row["total_return"] - before.loc[(s, t), "total_return"] for (s, t), row in now.iterrows()}
    top = sorted(deltas, key=lambda name: -abs(deltas[name]))[:5]
    listed = page[page.index('id="metric-movers"') :].split("</ul>")[0]
    assert re.findall(r"<li><b>([^<]+)</b>", listed) == top
    for name in top:
        assert f"({deltas[name] * 100:+.2f} pp)" in listed
    assert 'id="settings-changed"' not in page  # the same settings every day: like for like

    # a next date run with another fee: the section says first that the figures are not like for like
    cheaper = run_daily_dag(data_url, {**CONF, "fee_bps": 5}, as_of("2026-06-21"))
    assert cheaper.state == "success"
    page = (Path(layout.results_url(str(data_url), "2026-06-21", cheaper.run_id)) / layout.REPORT_HTML).read_text()
    warning = page[page.index('id="settings-changed"') : page.index("Signal changes")]
    assert "sma_trend: fee_bps 10.0 → 5.0" in warning and "window" not in warning.split(":", 1)[1]
