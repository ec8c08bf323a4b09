"""The Backtests page's day-over-day parts (`report.runs_view` through `ui.create_app`): runs by
date with each date's latest successful run and its previous run, and one pair's history on
request, on a store with several dates, a re-run, a failed run and a missing date (the store of
tests/test_history.py). Expected values come from that store's table, not from the code."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from backtest_airflow import ui
from tests.test_history import RUNS
from tests.test_history import store as history_store  # noqa: F401  (the fixture)


@pytest.fixture
def client(history_store):  # noqa: F811
    return TestClient(ui.create_app(history_store, require_auth=False))


def test_runs_by_date_mark_the_latest_successful_run_and_link_the_previous_one(client):
    page = client.get("/").text
    table = page[page.index('id="runs-by-date"') : page.index("</table>", page.index('id="runs-by-date"'))]
    rows = re.findall(r'<tr data-date="([0-9-]+)">(.*?)</tr>', table, re.S)
    assert [date for date, _ in rows] == sorted(RUNS, reverse=True)
    marked = {date: re.findall(r"&#9733; <code>([^<]+)</code>", cells) for date, cells in rows}
    # the latest successful run of each date; the failed 11-03 run has none
    assert marked == {"2026-11-04": ["r4"], "2026-11-03": [], "2026-11-02": ["r2b"], "2026-11-01": ["r1"]}
    previous = {date: re.findall(r'class="previous-run" href="#run-([0-9-]+)-([^"]+)"', cells) for date, cells in rows}
    # 11-04 compares with 11-02's re-run (11-03 failed), and the failed 11-03 run would have too
    assert previous == {
        "2026-11-04": [("2026-11-02", "r2b")], "2026-11-03": [("2026-11-02", "r2b")],
        "2026-11-02": [("2026-11-01", "r1")], "2026-11-01": [],
    }  # fmt: skip
    assert 'href="#run-2026-11-02-r2b"' in page and 'id="run-2026-11-02-r2b"' in page  # the link's target exists
    section = page[page.index('id="run-2026-11-02-r2"') :][:1500]
    assert "latest of 2026-11-02" not in section.split("</h2>")[0]  # the superseded run is not marked


def test_a_pairs_history_lists_each_dates_latest_successful_run(client):
    page = client.get("/history", params={"symbol": "BTCUSDT"})
    assert page.status_code == 200
    rows = re.findall(
        r'<tr data-date="([0-9-]+)"><td class="text">[^<]*</td><td class="text">([^<]*)</td><td>([^<]*)</td>'
        r'<td>([^<]*)</td><td class="text">([^<]*)</td><td class="text[^"]*">([^<]*)</td>',
        page.text,
    )
    # BTCUSDT is in 11-01's r1 and 11-02's re-run r2b; not in 11-04's run, and 11-03's run failed
    expected = []
    for date in sorted(RUNS, reverse=True):
        for run_id, ok, boards in RUNS[date]:
            latest = [r for r, good, _ in RUNS[date] if good][-1:] == [run_id]
            if ok and latest and "BTCUSDT" in boards:
                rank, status, position, _, total_return = boards["BTCUSDT"]
                expected.append((date, "sma_trend", str(rank), f"{total_return:+.2%}", status, position))
    assert rows == expected and len(rows) == 2
    assert "<svg" in page.text  # two dates: a chart


def test_a_pairs_history_answers_bad_or_unknown_requests_plainly(client):
    bad = client.get("/history", params={"symbol": "BTC/USDT"})
    assert bad.status_code == 400 and "is not a pair symbol" in bad.json()["detail"]
    assert client.get("/history", params={"symbol": "BTCUSDT", "metric": "x;drop"}).status_code == 400
    unknown = client.get("/history", params={"symbol": "DOGEUSDT"})
    assert unknown.status_code == 200 and 'id="no-history"' in unknown.text
    other_strategy = client.get("/history", params={"symbol": "BTCUSDT", "strategy": "sma_cross"})
    assert 'id="no-history"' in other_strategy.text


def test_the_pages_form_may_submit_to_the_page_but_the_report_may_not(client, history_store):  # noqa: F811
    page = client.get("/")
    assert "form-action 'self'" in page.headers["content-security-policy"]
    assert 'id="history-form"' in page.text and 'action="/history"' in page.text
    assert "form-action 'none'" in ui.REPORT_HEADERS["Content-Security-Policy"]
