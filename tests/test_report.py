"""The run report (report.html) and the Backtests app of the Airflow UI, without a browser."""

from __future__ import annotations

import html
import json
import re
import statistics
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from backtest.data.storage import read_bytes, resolve
from backtest.data.store import CandleStore
from backtest.data.synthetic import synthetic_candles
from backtest.params import HOUR_MS, parse_time_ms
from backtest_airflow import ui
from backtest_airflow.layout import run_folder_name, strategy_results_url
from backtest_airflow.report import page as report_page
from backtest_airflow.report import templating
from backtest_airflow.report.charts.base import bucket_max, thin_index
from backtest_airflow.report.charts.curves import drawdown, load_buy_hold, load_equity, shown_pairs
from backtest_airflow.report.formatting import format_value
from tests.support.dag import load_daily_dag, make_run

PAIRS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT"]
LOGICAL_DATE = datetime.fromisoformat("2026-10-01T00:00:00+00:00")
EXTERNAL = [
    re.compile(r"""(?:src|href|action|data)\s*=\s*["']?\s*(?:https?:)?//""", re.I),  # absolute or protocol-relative
    re.compile(r"<script[^>]*\bsrc\s*=", re.I),
    re.compile(r"<link\b", re.I),  # no stylesheet (or anything else) to fetch
    re.compile(r"""url\(\s*["']?\s*(?:https?:)?//""", re.I),
    re.compile(r"@import", re.I),
]


def table_html(page: str, table_id: str) -> str:
    table = page[page.index(f'id="{table_id}"') :]
    return table[: table.index("</table>")]


def leaderboard_symbols(page: str, table_id: str = "leaderboard-table") -> list[str]:
    return re.findall(r'<tr[^>]*data-symbol="([A-Z0-9]+)"', table_html(page, table_id))


def leaderboard_rows(page: str, table_id: str = "leaderboard-table") -> list[tuple[str, str]]:
    """(symbol, strategy) of each row of a leaderboard table, in page order."""
    return re.findall(r'<tr[^>]*data-symbol="([A-Z0-9]+)" data-strategy="([a-z_]+)"', table_html(page, table_id))


def table_heads(page: str, table_id: str) -> list[str]:
    head = table_html(page, table_id)
    return re.findall(r"<button type=\"button\">([^<]*)</button>", head[: head.index("</thead>")])


def assert_self_contained(page: str) -> None:
    for pattern in EXTERNAL:
        assert not pattern.search(page), pattern.pattern
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


# -- the DAG writes the report -----------------------------------------------------------------


@pytest.mark.slow
def test_rank_writes_a_self_contained_report(airflow_db, tmp_path):
    data_url = tmp_path / "store"
    dag = load_daily_dag(BACKTEST_EXECUTOR="local", BACKTEST_SOURCE="synthetic", BACKTEST_DATA_URL=str(data_url))
    dag_run = dag.test(logical_date=LOGICAL_DATE, run_conf={"pairs": PAIRS, "window": "2d", "lookback_days": 30})
    assert dag_run.state == "success"

    (folder,) = (data_url / "results" / "crypto_backtest_daily").glob("date=*/run=*")
    page = (folder / "report.html").read_text()
    assert sorted(leaderboard_symbols(page)) == sorted(PAIRS)  # every leaderboard row
    # Top 3 and bottom 3 of 5 ranked pairs: each pair once, one chart each, plus the returns chart.
    assert page.count('<figure class="chart pair-chart"') == 5
    assert page.count('<figure class="chart returns-chart"') == 1
    # one strategy: no comparison, no heatmap; each pair's chart twice (linear and log scale), the portfolio's
    svgs = 1 + 2 * 5 + page.count('<figure class="chart portfolio-chart"')
    assert page.count("<svg") == svgs and page.count("</svg>") == svgs
    assert leaderboard_rows(page) == [(pair, "sma_trend") for pair in leaderboard_symbols(page)]
    assert 'id="synthetic-banner"' in page and "SYNTHETIC DATA" in page
    assert 'id="cost-summary"' in page  # rank passes the run's cost summary
    assert "<summary>Per job (" in page and "cost_on_demand_usd" in page
    assert_self_contained(page)

    # rank returns the report's location, and the "Backtest report" link points at it.
    (rank,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == "rank"]
    assert _return_value(rank)["report"] == str(folder / "report.html")
    link = ui.BacktestReportLink().get_link(None, ti_key=rank.key)
    assert link == f"/backtests/report/2026-10-01/{run_folder_name(dag_run.run_id)}"
    assert folder.name == f"run={link.rsplit('/', 1)[1]}"
    (plan,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == "plan"]
    assert ui.BacktestReportLink().get_link(None, ti_key=plan.key) == ""

    client = TestClient(ui.create_app(str(data_url), require_auth=False))
    served = client.get(link.removeprefix(ui.URL_PREFIX))
    assert served.status_code == 200 and served.text == page


@pytest.mark.slow
def test_report_is_written_before_rank_fails_the_run(airflow_db, tmp_path):
    data_url = tmp_path / "store"
    # Candles of another source already stored for one pair: its synthetic refresh refuses to mix them.
    CandleStore(str(data_url)).write(
        "ADAUSDT", synthetic_candles("ADAUSDT", 1_788_000_000_000, 1_788_100_000_000), "file"
    )
    dag = load_daily_dag(BACKTEST_EXECUTOR="local", BACKTEST_SOURCE="synthetic", BACKTEST_DATA_URL=str(data_url))
    conf = {"pairs": PAIRS[:3] + ["ADAUSDT"], "window": "2d", "lookback_days": 30}
    dag_run = dag.test(logical_date=LOGICAL_DATE, run_conf=conf)
    assert dag_run.state == "failed"
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances() if ti.map_index <= 0}
    assert states["rank"] == "failed"

    (folder,) = (data_url / "results" / "crypto_backtest_daily").glob("date=*/run=*")
    page = (folder / "report.html").read_text()
    failed = page[page.index('id="failed-pairs"') :]
    assert "ADAUSDT" in failed[: failed.index("</table>")]
    assert sorted(leaderboard_symbols(page)) == sorted(PAIRS[:3] + ["ADAUSDT"])
    assert page.count('<figure class="chart pair-chart"') == 3


def _return_value(ti) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(
            select(XComModel.value).where(
                XComModel.dag_id == ti.dag_id,
                XComModel.run_id == ti.run_id,
                XComModel.task_id == ti.task_id,
                XComModel.key == "return_value",
            )
        )
    return json.loads(value) if isinstance(value, str) else value


# -- the report from a results folder ----------------------------------------------------------


# Strategies of the `several` run: one without a grid, grids over one, two and three parameters,
# and a three-parameter strategy of which two vary. Heatmaps: sma_cross and rsi_reversion only.
SEVERAL = [
    {"name": "sma_trend", "params": {"window": "2d"}},
    {"name": "sma_cross", "params": {"fast": "6h:18h:6h", "slow": "12h:2d:12h"}},
    {"name": "momentum", "params": {"lookback": "6h,12h,1d"}},
    {"name": "rsi_reversion", "params": {"period": "14", "lower": "20,30", "upper": "60,70,80"}},
    {"name": "donchian_breakout", "params": {"entry": "12h,1d", "exit": "6h,12h"}},
]
HEATMAP_STRATEGIES = {"sma_cross", "rsi_reversion", "donchian_breakout"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict:
    """Three finished runs in one local store: 8 pairs (one failed), a sweep with a hold-out, and
    five strategies (grids of one to three parameters) ranked by sharpe with one failed (pair, strategy)."""
    store = str(tmp_path_factory.mktemp("report") / "store")
    pairs = PAIRS + ["DOGEUSDT", "LTCUSDT", "DOTUSDT"]
    first = make_run(store, pairs, date="2026-10-01", failed=("XRPUSDT",))
    sweep = make_run(store, PAIRS[:3], date="2026-10-02", window="1d,2d", holdout_days=5, lookback_days=20)
    several = make_run(
        store,
        PAIRS,
        date="2026-10-03",
        lookback_days=20,
        strategies=SEVERAL,
        rank_by="sharpe",
        failed=(("ETHUSDT", "sma_cross"),),
    )
    return {"store": store, "first": first, "sweep": sweep, "several": several}


def read_report(run: dict) -> str:
    return (Path(run["plan"].results_url) / "report.html").read_text()


def several_run(finished: dict) -> tuple[dict, str, pd.DataFrame]:
    """The run of several strategies: the run, its report and its leaderboard."""
    run = finished["several"]
    return run, read_report(run), run["table"]


def test_report_shows_every_row_failed_pairs_and_top_and_bottom_curves(finished):
    run = finished["first"]
    page = read_report(run)
    assert leaderboard_symbols(page) == run["table"]["symbol"].tolist()  # in rank order, failed last
    shown = [s for s, _, _ in shown_pairs(run["table"])]
    ranked = run["table"].dropna(subset=["rank"])["symbol"].tolist()
    assert shown == ranked[:3] + ranked[-3:] and len(ranked) == 7
    charts = re.findall(
        r'<figure class="chart pair-chart" data-symbol="([A-Z0-9]+)" data-strategy="sma_trend" data-end="(top|bottom)"',
        page,
    )
    assert charts == [(s, "top") for s in ranked[:3]] + [(s, "bottom") for s in ranked[-3:]]
    # One strategy, one window: the leaderboard as before plus its strategy column, no params column.
    assert table_heads(page, "leaderboard-table")[:4] == ["rank", "symbol", "strategy", "status"]
    assert "params" not in table_heads(page, "leaderboard-table")
    for section in ('id="strategies"', 'id="heatmaps"', 'id="all-rows-table"'):
        assert section not in page
    # the returns chart, each pair's chart on a linear and a log scale, and the portfolio's
    assert page.count("<svg") == 1 + 2 * 6 + page.count('<figure class="chart portfolio-chart"')
    failed = page[page.index('id="failed-pairs"') :]
    assert "XRPUSDT" in failed and "failed: backtest task failed" in failed
    assert "XRPUSDT" not in shown
    assert 'id="synthetic-banner"' in page
    assert 'id="cost-summary"' in page  # rank prices the run (no job records here: 0 jobs)
    for text in ("lookback_days", "rank_by", "total_return", "as of <code>2026-10-01T00:00:00Z</code>"):
        assert text in page
    assert_self_contained(page)


def test_sweep_report_shows_best_windows_hold_out_figures_and_every_row(finished):
    run = finished["sweep"]
    page = read_report(run)
    assert sorted(leaderboard_symbols(page)) == sorted(PAIRS[:3])  # one row per pair: its best window
    assert "params" in table_heads(page, "leaderboard-table")
    assert sorted(leaderboard_symbols(page, "all-rows-table")) == sorted(PAIRS[:3] * 2)  # from grid.parquet
    assert "OOS return" in page and "hold-out starts" in page
    assert 'id="heatmaps"' not in page  # a grid over one parameter
    assert page.count('<figure class="chart pair-chart"') == 3
    assert_self_contained(page)


def path_points(svg: str, gid: str) -> np.ndarray:
    """The (x, y) points of the path in the SVG group `gid`."""
    path = re.search(rf'<g id="{gid}">\s*<path d="([^"]*)"', svg).group(1)
    return np.array([(float(x), float(y)) for x, y in re.findall(r"[ML] ([-0-9.]+) ([-0-9.]+)", path)])


def test_a_hold_out_chart_draws_the_out_of_sample_curve_after_the_in_sample_one(finished):
    run = finished["sweep"]
    page = read_report(run)
    drawn = re.findall(
        r'<figure class="chart pair-chart" data-symbol="(\w+)"[^>]*>(<svg.*?</svg>)\s*(<svg.*?</svg>)\s*'
        r'<div class="scale-log">(<svg.*?</svg>)\s*(<svg.*?</svg>)\s*</div>',
        page,
        re.S,
    )
    assert sorted(symbol for symbol, *_ in drawn) == sorted(PAIRS[:3])
    for symbol, in_sample, out_of_sample, _, out_of_sample_log in drawn:
        row = run["table"].set_index("symbol").loc[symbol]
        folder = strategy_results_url(run["plan"].results_url, "sma_trend")
        is_times, _ = load_equity(folder, symbol)
        table = pq.read_table(Path(folder) / f"{symbol}.oos.equity.parquet").to_pandas()
        times = table["open_time"].dt.as_unit("ms").astype("int64").to_numpy()
        # the hold-out starts at the bar after the in-sample part's last one
        assert times[0] == int(is_times[-1].astype("datetime64[ms]").astype(np.int64)) + HOUR_MS
        assert 'aria-label="Out-of-sample equity and drawdown' in out_of_sample and "(log scale)" in out_of_sample_log
        assert "hold-out, out of sample" in out_of_sample and "hold-out, out of sample" not in in_sample
        assert f"{symbol}: in sample {format_value('total_return', row['total_return'])}" in in_sample
        assert f"out of sample {format_value('total_return', row['oos_total_return'])}" in out_of_sample
        assert format_value("total_return", table["equity"].iloc[-1] - 1.0) == format_value(
            "total_return", row["oos_total_return"]
        )
        points = path_points(out_of_sample, "equity-curve")  # every bar of the stored curve, in its scale
        assert len(points) == len(table) and np.all(np.diff(points[:, 0]) > 0)
        assert affine_residual(table["equity"].to_numpy(), points[:, 1]) < 0.01
    assert "second: the hold-out, that combination traded on the bars no choice saw" in page


def test_buy_hold_and_drawdown_curves_match_the_metrics(finished):
    run = finished["first"]
    for row in run["table"].dropna(subset=["rank"]).to_dict("records"):
        times, equity = load_equity(strategy_results_url(run["plan"].results_url, row["strategy"]), row["symbol"])
        buy_hold = load_buy_hold(finished["store"], row["symbol"], times)
        assert len(times) == row["bars"]
        assert buy_hold[0] == 1.0 and buy_hold[-1] - 1 == pytest.approx(row["buy_hold_return"], rel=1e-12)
        assert equity[-1] - 1 == pytest.approx(row["total_return"], rel=1e-12)
        assert drawdown(equity).max() == pytest.approx(row["max_drawdown"], rel=1e-12)
    assert load_buy_hold(None, "BTCUSDT", times) is None
    assert load_buy_hold(str(Path(finished["store"]) / "nowhere"), "BTCUSDT", times) is None


def test_thinning_keeps_ends_and_drawdown_depth():
    values = np.zeros(10_000)
    values[4321] = 0.9
    index = thin_index(len(values), 800)
    assert index[0] == 0 and index[-1] == len(values) - 1 and len(index) <= 801
    assert bucket_max(values, index).max() == 0.9
    assert thin_index(5).tolist() == [0, 1, 2, 3, 4]


def test_report_escapes_text_and_shows_the_cost(finished):
    run = finished["first"]
    info = {
        **run["info"],
        "title": "<script>alert(1)</script>",
        "cost": {"text": "2 jobs <b>cheap</b>", "jobs": 2, "prices": {"vcpu_hour": 0.04}},
        "note": '"><img src=x onerror=alert(2)>',
    }
    page = report_page.build_report(run["plan"].results_url, run["table"], info)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>cheap</b>" not in page and "2 jobs &lt;b&gt;cheap&lt;/b&gt;" in page
    assert "<img" not in page and "&#34;&gt;&lt;img src=x" in page  # markupsafe writes " as &#34;
    assert 'id="cost-summary"' in page and "vcpu_hour: 0.04" in page
    failed_only = run["table"][run["table"]["status"] != "ok"]  # no charts: quick
    text_cost = report_page.build_report(run["plan"].results_url, failed_only, {**run["info"], "cost": "$0.01 <i>"})
    assert "<pre>$0.01 &lt;i&gt;</pre>" in text_cost
    assert 'id="cost-summary"' not in report_page.build_report(run["plan"].results_url, failed_only, run["info"])


# -- the Backtests app ---------------------------------------------------------------------------


@pytest.fixture
def client(finished) -> TestClient:
    return TestClient(ui.create_app(finished["store"], require_auth=False))


def test_backtests_page_lists_runs_newest_first_with_their_rows(client, finished):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    runs = re.findall(r'<section class="run" id="[^"]+" data-date="([^"]+)" data-run="([^"]+)"', page.text)
    assert runs == [
        ("2026-10-03", finished["several"]["folder"]),
        ("2026-10-02", finished["sweep"]["folder"]),
        ("2026-10-01", finished["first"]["folder"]),
    ]
    for key in ("first", "sweep"):
        run = finished[key]
        rows = leaderboard_symbols(page.text, f"leaderboard-{run['date']}-{run['folder']}")
        assert sorted(rows) == sorted(run["plan"].pairs)
        assert f'href="/report/{run["date"]}/{run["folder"]}"' in page.text
    assert "SYNTHETIC DATA" in page.text and "1 failed" in page.text
    # Several strategies: a row per (pair, strategy) in rank order, their strategy and chosen params shown.
    several = finished["several"]
    table_id = f"leaderboard-{several['date']}-{several['folder']}"
    assert leaderboard_rows(page.text, table_id) == list(
        zip(several["table"]["symbol"], several["table"]["strategy"], strict=True)
    )
    assert table_heads(page.text, table_id)[:5] == ["rank", "symbol", "strategy", "status", "params"]
    assert (
        "5 pairs &times; 5 strategies" in page.text and "every combination is in <code>grid.parquet</code>" in page.text
    )
    first_id = f"leaderboard-{finished['first']['date']}-{finished['first']['folder']}"
    assert table_heads(page.text, first_id)[:4] == ["rank", "symbol", "strategy", "status"]
    assert "params" not in table_heads(page.text, first_id)  # one strategy, one window
    assert_self_contained(page.text)
    assert "default-src 'none'" in page.headers["content-security-policy"]

    only = client.get("/", params={"limit": 1}).text
    assert 'data-date="2026-10-03"' in only and 'data-date="2026-10-02"' not in only
    assert client.get("/", params={"limit": 0}).status_code == 422


def test_report_route_serves_the_stored_report(client, finished):
    run = finished["first"]
    served = client.get(f"/report/{run['date']}/{run['folder']}")
    assert served.status_code == 200 and served.text == read_report(run)
    assert served.headers["x-content-type-options"] == "nosniff"
    assert client.get(f"/report/2026-09-30/{run['folder']}").status_code == 404  # no such run


@pytest.mark.parametrize(
    "path",
    [
        "/report/2026-10-01/..",
        "/report/2026-10-01/.",
        "/report/2026-10-01/%2e%2e",
        "/report/2026-10-01/..%2F..%2Fcandles",
        "/report/..%2F..%2F..%2Fetc/passwd",
        "/report/2026-10-01/..%5C..",
        "/report/2026-10-01/a%00b",
        "/report/2026-10-1/x",
        "/report/date=2026-10-01/x",
        "/report/2026-10-01/.hidden",
        "/report/2026-10-01/" + "a" * 300,
    ],
)
def test_report_route_rejects_anything_but_a_run_folder(client, path):
    assert client.get(path).status_code in (400, 404)


def test_empty_store_and_authentication(tmp_path, finished):
    empty = TestClient(ui.create_app(str(tmp_path / "nothing"), require_auth=False)).get("/")
    assert empty.status_code == 200 and 'id="no-runs"' in empty.text
    guarded = TestClient(ui.create_app(finished["store"]))  # as mounted in the api-server
    assert guarded.get("/").status_code == 401
    run = finished["first"]
    assert guarded.get(f"/report/{run['date']}/{run['folder']}").status_code == 401


@pytest.mark.slow
def test_report_and_page_on_s3(s3_bucket):
    store = f"s3://{s3_bucket}/store"
    strategies = [SEVERAL[0], {"name": "sma_cross", "params": {"fast": "6h,12h", "slow": "1d,2d"}}]
    run = make_run(store, PAIRS[:2], lookback_days=10, strategies=strategies)
    page = read_bytes(resolve(run["plan"].results_url).join("report.html")).decode()
    assert sorted(leaderboard_rows(page)) == sorted((p, s["name"]) for p in PAIRS[:2] for s in strategies)
    assert page.count('<figure class="chart pair-chart"') == 4 and "Buy-and-hold unavailable" not in page
    # The grid file on S3: the every-row table and the heatmaps (read with a filter) come from it.
    assert len(leaderboard_rows(page, "all-rows-table")) == 2 * (1 + 4)
    assert [t["symbol"] for t in heatmap_tables(page)] == run["table"].query("strategy == 'sma_cross'")[
        "symbol"
    ].tolist()
    client = TestClient(ui.create_app(store, require_auth=False))
    listing = client.get("/").text
    assert f'data-date="2026-10-01" data-run="{run["folder"]}"' in listing
    assert sorted(leaderboard_symbols(listing, f"leaderboard-2026-10-01-{run['folder']}")) == sorted(PAIRS[:2] * 2)
    assert client.get(f"/report/2026-10-01/{run['folder']}").text == page


def test_plugin_registers_the_app_the_view_and_the_link():
    import backtest_ui_plugin

    plugin = backtest_ui_plugin.BacktestUIPlugin
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/backtests" and app["name"] == "Backtests"
    (view,) = plugin.external_views
    assert view["href"] == "/backtests/" and view["destination"] == "nav" and view["url_route"] == "backtests"
    (link,) = plugin.global_operator_extra_links
    assert link.name == "Backtest report"


def test_huge_grids_keep_every_row_table_out_of_the_page(tmp_path):
    """100 pairs x 51 windows: the (pair, strategy, combination) rows stay in grid.parquet."""
    from backtest_airflow.report import grid_file

    results = []
    for i in range(100):
        sweep = [{"params": {"window": f"{w}d", "window_bars": 24 * w}, "total_return": 0.01 * i - 0.001 * w,
                  "buy_hold_return": 0.0} for w in range(1, 52)]  # fmt: skip
        results.append({"symbol": f"P{i:04d}USDT", "params": {**sweep[0]["params"], "fee_bps": 10},
                        "best": sweep[0]["params"], "sweep": sweep, "grid": {"select_by": "total_return"}})  # fmt: skip
    writer = grid_file.GridWriter(grid_file.grid_schema(results[:1]))
    for result in results:
        writer.add(grid_file.grid_columns(result["symbol"], "sma_trend", result, "ok"))
    writer.close(resolve(str(tmp_path)).join("grid.parquet"))
    table = pd.DataFrame(
        [
            {
                "rank": i + 1,
                "symbol": r["symbol"],
                "strategy": "sma_trend",
                "status": "ok",
                "params": "window=1d",
                "best": True,
                "total_return": 0.01 * i,
                "buy_hold_return": 0.0,
                "combinations": 51,
                "select_by": "total_return",
            }
            for i, r in enumerate(results)
        ]
    )
    page = report_page.build_report(
        str(tmp_path), table, {"strategies": [{"name": "sma_trend", "params": {"window": "1d:51d:1d"}}]}
    )
    assert 'id="all-rows-table"' not in page
    assert "All 5100 (pair, strategy, combination) rows are in grid.parquet" in page
    assert page.count('data-symbol="P0099USDT"') == 1  # the best-combination table still lists every pair
    assert 'id="heatmaps"' not in page  # one parameter varies
    assert "sma_trend window=1d:51d:1d" in page  # the strategies parameter, as the user wrote it


# -- several strategies ------------------------------------------------------------------------


def heatmap_tables(page: str) -> list[dict]:
    """Every heatmap's values table: its attributes, column labels, and row label -> [(data-value, chosen)]."""
    found = []
    pattern = r'<table class="heatmap-values" data-symbol="(\w+)" data-strategy="(\w+)" data-metric="(\w+)" data-y="(\w+)" data-x="(\w+)">(.*?)</table>'
    for symbol, strategy, metric, y, x, body in re.findall(pattern, page, re.S):
        head, rows = body.split("</thead>")
        columns = re.findall(r'<th scope="col">([^<]*)</th>', head)
        cells = {
            label: re.findall(r'<td data-value="([^"]*)"( class="chosen")?>', row)
            for label, row in re.findall(r'<tr><th scope="row" class="text">([^<]*)</th>(.*?)</tr>', rows, re.S)
        }
        found.append({"symbol": symbol, "strategy": strategy, "metric": metric, "y": y, "x": x,
                      "columns": columns, "cells": cells})  # fmt: skip
    return found


def label(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_heatmaps_show_the_selection_metric_of_each_combination_for_two_parameter_grids(finished):
    run, page, table = several_run(finished)
    figures = re.findall(r'<figure class="chart heatmap-chart" data-strategy="(\w+)"><svg', page)
    assert sorted(figures) == sorted(HEATMAP_STRATEGIES)  # not sma_trend (no grid), not momentum (one parameter)
    tables = heatmap_tables(page)
    for strategy in HEATMAP_STRATEGIES:
        ranked = table[(table["strategy"] == strategy) & table["rank"].notna()].sort_values("rank")
        shown = [t["symbol"] for t in tables if t["strategy"] == strategy]
        assert shown == ranked["symbol"].tolist()[:3]  # the strategy's top 3 pairs, best first
    assert len(tables) == 3 * len(HEATMAP_STRATEGIES)

    figure_svg = dict(
        re.findall(r'<figure class="chart heatmap-chart" data-strategy="(\w+)">(<svg.*?</svg>)', page, re.S)
    )
    for t in tables:
        result = json.loads(
            (Path(strategy_results_url(run["plan"].results_url, t["strategy"])) / f"{t['symbol']}.json").read_text()
        )
        assert t["metric"] == result["grid"]["select_by"] == "sharpe"  # what the job chose by (rank_by here)
        varying = [
            k for k, v in result["grid"]["values"].items() if len({row["params"][k] for row in result["sweep"]}) > 1
        ]
        assert [t["y"], t["x"]] == varying
        expected = {
            (label(row["params"][t["y"]]), label(row["params"][t["x"]])): row["sharpe"] for row in result["sweep"]
        }
        filled = 0
        for row_label, cells in t["cells"].items():
            assert len(cells) == len(t["columns"])
            for column, (value, chosen) in zip(t["columns"], cells, strict=True):
                want = expected.get((row_label, column))
                if want is None:  # a rejected combination, or no sharpe
                    assert value == ""
                    continue
                filled += 1
                assert float(value) == want, (t["symbol"], t["strategy"], row_label, column)
                cell_chosen = {t["y"]: row_label, t["x"]: column}
                assert bool(chosen) == all(label(result["best"][k]) == v for k, v in cell_chosen.items())
        assert filled == sum(v is not None for v in expected.values())
        assert sum(bool(chosen) for cells in t["cells"].values() for _, chosen in cells) == 1
        # The chosen cell is the best sharpe of the grid (the job's choice), and the leaderboard's params.
        assert max(v for v in expected.values() if v is not None) == result["sharpe"]
        if len(t["cells"]) * len(t["columns"]) <= 64:  # small grids: the values are written in the SVG's cells
            for v in expected.values():
                if v is not None:
                    assert f">{v:.2f}</text>" in figure_svg[t["strategy"]]

    # Parameters of different types on the axes: bar counts by their labels, numbers as numbers.
    (rsi,) = [t for t in tables if t["strategy"] == "rsi_reversion"][:1]
    assert (rsi["y"], rsi["x"], list(rsi["cells"]), rsi["columns"]) == (
        "lower",
        "upper",
        ["20", "30"],
        ["60", "70", "80"],
    )
    (cross,) = [t for t in tables if t["strategy"] == "sma_cross"][:1]
    assert list(cross["cells"]) == ["6h", "12h", "18h"] and cross["columns"] == ["12h", "1d", "36h", "2d"]


def test_strategies_are_compared_across_pairs(finished):
    _, page, table = several_run(finished)
    names = [item["name"] for item in SEVERAL]
    assert len(table) == len(PAIRS) * len(SEVERAL)
    assert leaderboard_rows(page) == list(zip(table["symbol"], table["strategy"], strict=True))  # in rank order
    # the grids' rows are their in-sample best: marked, before their params
    assert table_heads(page, "leaderboard-table")[:6] == ["rank", "symbol", "strategy", "status", "selection", "params"]
    failed = table_html(page, "failed-pairs")
    assert '<td class="text">ETHUSDT</td><td class="text">sma_cross</td>' in failed

    # Independently: plain loops over the leaderboard rows.
    ranked = [r for r in table.to_dict("records") if r["status"] == "ok" and not pd.isna(r["sharpe"])]
    best_of: dict[str, dict] = {}
    for r in ranked:  # the best sharpe per pair; a tie goes to the better rank
        held = best_of.get(r["symbol"])
        if held is None or (r["sharpe"], -r["rank"]) > (held["sharpe"], -held["rank"]):
            best_of[r["symbol"]] = r
    rows = re.findall(r'<tr data-strategy="(\w+)">(.*?)</tr>', table_html(page, "strategy-comparison"), re.S)
    assert [name for name, _ in rows] == names
    shares = 0.0
    for name, cells in rows:
        values = dict(re.findall(r'data-key="(\w+)" data-value="([^"]*)"', cells))
        mine = [r["sharpe"] for r in ranked if r["strategy"] == name]
        wins = sum(1 for r in best_of.values() if r["strategy"] == name)
        assert int(float(values["pairs"])) == len(PAIRS)
        assert int(float(values["ranked"])) == int(((table["strategy"] == name) & table["rank"].notna()).sum())
        assert float(values["median"]) == pytest.approx(statistics.median(mine), rel=1e-12)
        assert float(values["mean"]) == pytest.approx(statistics.fmean(mine), rel=1e-12)
        assert int(float(values["best_pairs"])) == wins
        assert float(values["best_share"]) == pytest.approx(wins / len(best_of), rel=1e-12)
        shares += float(values["best_share"])
    assert shares == pytest.approx(1.0)  # each pair has one best strategy
    assert (
        int(float(dict(re.findall(r'data-key="(\w+)" data-value="([^"]*)"', rows[1][1]))["ranked"])) == len(PAIRS) - 1
    )
    assert page.count('<figure class="chart strategies-chart"><svg') == 1

    # Curves: the top and bottom (pair, strategy) rows, each from its strategy's folder.
    curves = re.findall(
        r'<figure class="chart pair-chart" data-symbol="(\w+)" data-strategy="(\w+)" data-end="(\w+)"', page
    )
    assert curves == shown_pairs(table) and len(curves) == 6
    cards = dict((v, k) for k, v in re.findall(r'<div class="card"><b>([^<]*)</b><span>([^<]*)</span>', page))
    assert (cards["pairs"], cards["strategies"], cards["failed"]) == (str(len(PAIRS)), str(len(SEVERAL)), "1")
    assert_self_contained(page)
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert [_sha256(script) for script in scripts] == [templating.SCRIPT_HASH]  # the CSP's hash is the script's
    assert f"script-src {templating.SCRIPT_HASH}" in page


def test_heatmap_needs_exactly_two_varying_parameters():
    from backtest_airflow.report.charts.heatmaps import heatmap

    rows = pd.DataFrame(
        {"symbol": "X", "strategy": "s", "best": [False, True, False, False],
         "param_a": ["1d", "1d", "2d", "2d"], "param_a_bars": [24, 24, 48, 48],
         "param_b": [0.5, 1.5, 0.5, 1.5], "param_c": [3, 3, 3, 3], "sharpe": [0.1, 0.4, None, 0.2]}
    )  # fmt: skip
    item = heatmap(rows, "sharpe")
    assert (item.y, item.x, item.y_labels, item.x_labels, item.best) == ("a", "b", ["1d", "2d"], ["0.5", "1.5"], (0, 1))
    assert np.array_equal(item.values, [[0.1, 0.4], [np.nan, 0.2]], equal_nan=True)
    assert heatmap(rows.assign(param_c=[3, 4, 5, 6]), "sharpe") is None  # three vary
    assert heatmap(rows.assign(param_b=1.0), "sharpe") is None  # one varies


def _csp_directive(csp: str, name: str) -> str:
    (directive,) = [d.strip() for d in csp.split(";") if d.strip().startswith(name + " ")]
    return directive


def _sha256(text: str) -> str:
    import base64
    import hashlib

    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_served_pages_run_only_their_own_script(client, finished):
    """No 'unsafe-inline' script: whoever can write results/* cannot run script in a user's browser."""
    run = finished["first"]
    for path in ("/", f"/report/{run['date']}/{run['folder']}"):
        served = client.get(path)
        csp = served.headers["content-security-policy"]
        script_src = _csp_directive(csp, "script-src")
        assert script_src == f"script-src {templating.SCRIPT_HASH}"
        scripts = re.findall(r"<script>(.*?)</script>", served.text, re.S)
        assert scripts and {_sha256(s) for s in scripts} == {templating.SCRIPT_HASH}  # the page's own script runs
        assert f"script-src {templating.SCRIPT_HASH}" in served.text  # the stored page's own <meta> CSP too
    assert "sandbox allow-scripts" in csp  # the report: an opaque origin, away from the UI's session


def test_a_tampered_report_is_served_under_the_same_policy(tmp_path, finished):
    import shutil

    run = finished["first"]
    store = tmp_path / "store"
    shutil.copytree(finished["store"], store)
    page = store / "results" / ui.DAG_ID / f"date={run['date']}" / f"run={run['folder']}" / "report.html"
    injected = "document.title = 'pwned'"
    page.write_text(
        page.read_text().replace("</main>", f"<script>{injected}</script><img src=x onerror=alert(1)></main>")
    )
    served = TestClient(ui.create_app(str(store), require_auth=False)).get(f"/report/{run['date']}/{run['folder']}")
    assert served.status_code == 200 and injected in served.text  # served as stored...
    script_src = _csp_directive(served.headers["content-security-policy"], "script-src")
    assert _sha256(injected) not in script_src and "unsafe" not in script_src  # ...but it may not run


def _write_runs(store: Path, tables: dict[str, pd.DataFrame | bytes]) -> None:
    for i, (name, table) in enumerate(tables.items()):
        folder = store / "results" / ui.DAG_ID / f"date=2026-11-0{i + 1}" / f"run={name}"
        folder.mkdir(parents=True)
        if isinstance(table, bytes):
            (folder / "leaderboard.parquet").write_bytes(table)
        else:
            table.to_parquet(folder / "leaderboard.parquet")


def test_a_malformed_leaderboard_does_not_take_the_page_down(tmp_path, finished):
    good = finished["first"]["table"]
    store = tmp_path / "store"
    _write_runs(
        store,
        {
            "good": good,
            "no-status": good.drop(columns=["status"]),
            "text-return": good.assign(total_return="a lot"),
            "not-parquet": b"PAR1 garbage",
        },
    )
    page = TestClient(ui.create_app(str(store), require_auth=False)).get("/")
    assert page.status_code == 200
    found = re.findall(r'<section class="run([^"]*)" id="run-[0-9-]+-([a-z-]+)"', page.text)
    assert {name: kind.strip() for kind, name in found} == {
        "good": "",
        "no-status": "unreadable",
        "text-return": "unreadable",
        "not-parquet": "unreadable",
    }
    assert page.text.count("Leaderboard unreadable.") == 3
    assert sorted(leaderboard_symbols(page.text, "leaderboard-2026-11-01-good")) == sorted(good["symbol"].unique())


HOSTILE_SYMBOL = '"><img src=x onerror=alert(3)>'
HOSTILE_STATUS = "failed: <script>alert(4)</script>"


def _with_hostile_row(table: pd.DataFrame) -> pd.DataFrame:
    row = {"symbol": HOSTILE_SYMBOL, "status": HOSTILE_STATUS, **({"best": True} if "best" in table else {})}
    return pd.concat([table, pd.DataFrame([row])], ignore_index=True)


def assert_escaped(page: str) -> None:
    assert "<img" not in page and "<script>alert(4)" not in page
    assert 'data-symbol="&#34;&gt;&lt;img src=x onerror=alert(3)&gt;"' in page  # in an attribute
    assert "&lt;script&gt;alert(4)&lt;/script&gt;" in page  # in text


def test_hostile_values_are_escaped_in_the_report_and_the_page(tmp_path, finished):
    """Autoescaping: a symbol, status or title with markup in it shows as text, in the report and the page."""
    run = finished["first"]
    failed_only = run["table"][run["table"]["status"] != "ok"]  # no charts: quick
    title = '<script>alert(1)</script>"><img src=x>'
    page = report_page.build_report(
        run["plan"].results_url, _with_hostile_row(failed_only), {**run["info"], "title": title}
    )
    assert_escaped(page)
    assert "<title>&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x&gt;</title>" in page
    assert page.count("<script>") == 1  # the page's own

    store = tmp_path / "store"
    _write_runs(store, {"hostile": _with_hostile_row(run["table"])})
    listing = TestClient(ui.create_app(str(store), require_auth=False)).get("/").text
    assert '<section class="run" id="run-2026-11-01-hostile"' in listing  # shown, not "unreadable"
    assert_escaped(listing)
    assert listing.count("<script>") == 1


# -- walk-forward ------------------------------------------------------------------------------

WALK_STRATEGIES = [
    {"name": "sma_cross", "params": {"fast": "6h,12h", "slow": "1d,2d"}},
    {"name": "momentum", "params": {"lookback": "12h,1d"}},
]


@pytest.fixture(scope="module")
def walked(tmp_path_factory) -> dict:
    """A walk-forward run (20d:10d over 60 days: 4 folds) of 4 pairs x 2 strategies, ranked by sharpe."""
    store = str(tmp_path_factory.mktemp("walk") / "store")
    run = make_run(store, PAIRS[:4], lookback_days=60, strategies=WALK_STRATEGIES, rank_by="sharpe",
                   walk_forward="20d:10d")  # fmt: skip
    results = {
        (row["symbol"], row["strategy"]): json.loads(
            (Path(strategy_results_url(run["plan"].results_url, row["strategy"])) / f"{row['symbol']}.json").read_text()
        )
        for row in run["table"].to_dict("records")
    }
    return {**run, "store": store, "page": read_report(run), "results": results}


def text_heads(page: str, table_id: str) -> list[str]:
    """A table's column headers as text (entities decoded)."""
    return [html.unescape(head) for head in table_heads(page, table_id)]


def params_label(params: dict) -> str:
    """A combination as the user writes it (bar counts by their label), independently of the report."""
    return " ".join(f"{k}={v}" for k, v in params.items() if not (k.endswith("_bars") and k[:-5] in params))


def figures(page: str) -> dict[tuple[str, str], str]:
    """Each pair chart's SVG, by (symbol, strategy)."""
    found = re.findall(
        r'<figure class="chart pair-chart" data-symbol="(\w+)" data-strategy="(\w+)" data-end="\w+">(<svg.*?</svg>)',
        page,
        re.S,
    )
    return {(symbol, strategy): svg for symbol, strategy, svg in found}


def path_xs(svg: str, gid: str) -> list[float]:
    """The x coordinates of the path in the SVG group `gid` (matplotlib writes "M x y L x y ...")."""
    path = re.search(rf'<g id="{gid}">\s*<path d="([^"]*)"', svg).group(1)
    return [float(x) for x in re.findall(r"[ML] ([-0-9.]+) [-0-9.]+", path)]


def test_walk_forward_charts_mark_the_folds_where_their_test_windows_start(walked):
    table, results = walked["table"], walked["results"]
    charts = figures(walked["page"])
    assert list(charts) == [(s, k) for s, k, _ in shown_pairs(table)] and len(charts) == 6
    for (symbol, strategy), svg in charts.items():
        folds = results[symbol, strategy]["walk_forward"]["folds"]
        # the curve drawn is the stored stitched one: from the first test start to the window's end
        times, _ = load_equity(strategy_results_url(walked["plan"].results_url, strategy), symbol)
        first, last = (int(t) for t in times[[0, -1]].astype("datetime64[ms]").astype(np.int64))
        assert first == parse_time_ms(folds[0]["test_start"]) and last == parse_time_ms(walked["plan"].end) - HOUR_MS
        curve = path_xs(svg, "equity-curve")
        x0, x1 = curve[0], curve[-1]
        hour = (x1 - x0) / ((last - first) / HOUR_MS)  # the width of an hour on the chart
        assert len(folds) == 4 and f'id="fold-boundary-{len(folds)}"' not in svg  # one line per later fold
        for k, fold in enumerate(folds[1:], start=1):
            xs = path_xs(svg, f"fold-boundary-{k}")
            assert len(set(xs)) == 1  # vertical
            at = first + (xs[0] - x0) / (x1 - x0) * (last - first)  # back from the chart to a time
            assert abs(at - parse_time_ms(fold["test_start"])) < 0.05 * HOUR_MS, (symbol, strategy, k)
        assert hour > 0.1  # so that 5 % of an hour is a meaningful tolerance (an hour is visible)


def test_walk_forward_fold_tables_are_the_results_folds(walked):
    page, results = walked["page"], walked["results"]
    tables = re.findall(
        r'<table class="folds" data-symbol="(\w+)" data-strategy="(\w+)"><thead>(.*?)</thead><tbody>(.*?)</tbody>',
        page,
        re.S,
    )
    assert [(s, k) for s, k, _, _ in tables] == [(s, k) for s, k, _ in shown_pairs(walked["table"])]
    for symbol, strategy, head, body in tables:
        result = results[symbol, strategy]
        assert result["grid"]["select_by"] == "sharpe"
        assert re.findall(r"<th[^>]*>([^<]*)</th>", head) == [
            "fold", "training window", "test window", "params", "IS sharpe", "IS cagr", "OOS return", "OOS cagr",
            "efficiency",
        ]  # fmt: skip
        rows = re.findall(
            r'<tr data-fold="(\d+)" data-train-start="([^"]+)" data-train-end="([^"]+)" data-test-start="([^"]+)" '
            r'data-test-end="([^"]+)">(.*?)</tr>',
            body,
            re.S,
        )
        folds = result["walk_forward"]["folds"]
        assert len(rows) == len(folds)
        for (k, *ranges, cells), fold in zip(rows, folds, strict=True):
            assert ranges == [fold[key] for key in ("train_start", "train_end", "test_start", "test_end")]
            assert re.search(r'<td class="text params">([^<]*)</td>', cells).group(1) == params_label(fold["params"])
            values = re.findall(r'<td data-value="([^"]*)">', cells)
            expected = [fold["in_sample"]["sharpe"], fold["in_sample"]["cagr"], fold["out_of_sample"]["total_return"],
                        fold["out_of_sample"]["cagr"], fold["efficiency"]]  # fmt: skip
            assert [float(v) if v else None for v in values] == expected, (symbol, strategy, k)


def test_walk_forward_efficiency_per_pair_and_the_stitched_figures(walked):
    page, table, results = walked["page"], walked["table"], walked["results"]
    assert 'id="walk-forward"' in page and page.count('<figure class="chart efficiency-chart"><svg') == 1
    heads = text_heads(page, "walk-forward-table")
    rows = re.findall(
        r'<tr data-symbol="(\w+)" data-strategy="(\w+)">(.*?)</tr>', table_html(page, "walk-forward-table"), re.S
    )
    assert [(s, k) for s, k, _ in rows] == list(zip(table["symbol"], table["strategy"], strict=True))  # rank order
    for symbol, strategy, cells in rows:
        walk = results[symbol, strategy]["walk_forward"]
        values = dict(zip(heads, re.findall(r'data-value="([^"]*)"', cells), strict=True))
        assert (float(values["WF efficiency"]) if values["WF efficiency"] else None) == walk["efficiency"]
        assert int(float(values["folds"])) == len(walk["folds"]) == 4
        assert int(float(values["efficiency folds"])) == walk["efficiency_folds"]
        assert int(float(values["param changes"])) == walk["param_changes"]
        assert float(values["OOS sharpe"]) == walk["stitched"]["sharpe"] == results[symbol, strategy]["oos"]["sharpe"]
        assert values["next params"] == params_label(walk["folds"][-1]["params"])
        assert values["next params"] == params_label(results[symbol, strategy]["next"]["params"])
        median = walk["efficiency_median"]
        assert (float(values["WF efficiency (median)"]) if values["WF efficiency (median)"] else None) == median
    assert any(results[key]["walk_forward"]["efficiency"] is not None for key in results)  # not all n/a

    # The leaderboard shows what the run ranked on first: the stitched figures, then the efficiency.
    board_heads = text_heads(page, "leaderboard-table")
    assert board_heads[:8] == ["rank", "symbol", "strategy", "status", "OOS return", "OOS buy & hold",
                               "OOS sharpe", "IS sharpe (folds)"]  # fmt: skip
    assert {"WF efficiency", "WF efficiency (median)", "change share", "folds", "next params", "OOS cagr",
            "IS cagr (folds)", "OOS PSR", "OOS profit factor", "OOS loss streak"} <= set(board_heads)  # fmt: skip
    # ...and never the whole window's grid best (chosen with hindsight) beside them
    whole = {"params", "selection", "return", "buy & hold", "excess", "cagr", "sharpe", "DSR", "PSR", "sortino",
             "max DD", "trades", "profit factor", "last fold's params"}  # fmt: skip
    assert not whole & set(board_heads) and not whole & set(text_heads(page, "walk-forward-table"))
    # The stored curve is the stitched one; buy-and-hold over the same test bars (close / first test close).
    for symbol, strategy, _ in shown_pairs(table):
        row = table.set_index(["symbol", "strategy"]).loc[(symbol, strategy)]
        times, equity = load_equity(strategy_results_url(walked["plan"].results_url, strategy), symbol)
        buy_hold = load_buy_hold(walked["store"], symbol, times)
        assert buy_hold[0] == 1.0 and buy_hold[-1] - 1 == pytest.approx(row["oos_buy_hold_return"], rel=1e-12)
        assert equity[-1] - 1 == pytest.approx(row["oos_total_return"], rel=1e-12)
        assert drawdown(equity).max() == pytest.approx(row["oos_max_drawdown"], rel=1e-12)
    cards = dict((v, k) for k, v in re.findall(r'<div class="card"><b>([^<]*)</b><span>([^<]*)</span>', page))
    median = statistics.median(table["oos_total_return"])
    assert cards["median return (out of sample)"] == f"{median:+.2%}"
    assert cards["best by oos_sharpe"].startswith(f"{table['symbol'].iloc[0]} {table['strategy'].iloc[0]} ")
    assert "walk_forward" in page and "20d:10d" in page  # the run's parameter
    assert_self_contained(page)
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert [_sha256(script) for script in scripts] == [templating.SCRIPT_HASH]


def test_backtests_page_shows_a_walk_forwards_stitched_return_and_efficiency(walked):
    client = TestClient(ui.create_app(walked["store"], require_auth=False))
    page = client.get("/").text
    table_id = f"leaderboard-{walked['date']}-{walked['folder']}"
    heads = text_heads(page, table_id)
    assert heads == ["rank", "symbol", "strategy", "status", "OOS return", "OOS buy & hold", "WF efficiency",
                     "OOS max DD", "OOS trades", "next params"]  # out of sample only: no params, no whole window  # fmt: skip
    rows = re.findall(r'<tr data-symbol="(\w+)" data-strategy="(\w+)">(.*?)</tr>', table_html(page, table_id), re.S)
    for symbol, strategy, cells in rows:
        values = dict(zip(heads, re.findall(r'data-value="([^"]*)"', cells), strict=True))
        walk = walked["results"][symbol, strategy]["walk_forward"]
        assert float(values["OOS return"]) == walk["stitched"]["total_return"]
        assert (float(values["WF efficiency"]) if values["WF efficiency"] else None) == walk["efficiency"]
    assert_self_contained(page)


# -- how the figures were chosen, deflated Sharpe, trades, readability (issue 21) ----------------


def banners(page: str) -> dict[str, str]:
    """The header's notes on how the figures were chosen, by kind, as text."""
    found = re.findall(r'<div class="banner selection [\w-]+" data-selection="([\w-]+)">(.*?)</div>', page, re.S)
    return {kind: html.unescape(re.sub(r"<[^>]+>", "", text)) for kind, text in found}


def board_cells(page: str, table_id: str = "leaderboard-table") -> dict[tuple[str, str], dict[str, tuple[str, str]]]:
    """(symbol, strategy) -> column header -> (class, data-value) of a leaderboard table's cells."""
    heads = text_heads(page, table_id)
    rows = re.findall(r'<tr[^>]*data-symbol="(\w+)" data-strategy="(\w+)">(.*?)</tr>', table_html(page, table_id), re.S)
    cells = {}
    for symbol, strategy, body in rows:
        found = re.findall(r'<td class="([^"]*)" data-value="([^"]*)">', body)
        cells[symbol, strategy] = dict(zip(heads, found, strict=True))
    return cells


def number(value: str) -> float | None:
    return float(value) if value else None


def test_a_grids_in_sample_best_is_marked_as_hindsight_with_its_deflated_sharpe(finished):
    run, page, table = several_run(finished)
    notes = banners(page)
    assert list(notes) == ["hindsight"]
    for strategy in ("sma_cross", "momentum", "rsi_reversion", "donchian_breakout"):  # the grids, not sma_trend
        n = int(table.loc[table["strategy"] == strategy, "combinations"].dropna().iloc[0])
        assert (
            f"{strategy}: in-sample best of {n} combinations: hindsight, not an out-of-sample result"
            in notes["hindsight"]
        )
    assert "sma_trend:" not in notes["hindsight"]
    assert 'id="portfolio-hindsight"' in page  # the portfolio of in-sample bests is hindsight too
    heads = text_heads(page, "leaderboard-table")
    assert heads[heads.index("sharpe") + 1 : heads.index("sharpe") + 3] == ["DSR", "PSR"]  # beside the Sharpe
    for (symbol, strategy), cells in board_cells(page).items():
        row = table.set_index(["symbol", "strategy"]).loc[(symbol, strategy)]
        if row["status"] != "ok":
            continue
        result = json.loads(
            (Path(strategy_results_url(run["plan"].results_url, strategy)) / f"{symbol}.json").read_text()
        )
        assert number(cells["DSR"][1]) == result["dsr"] == (None if pd.isna(row["dsr"]) else row["dsr"])
        assert number(cells["PSR"][1]) == result["psr"]
        css, value = cells["selection"]
        assert value == result["selection"] == ("none" if strategy == "sma_trend" else "in_sample_best")
        assert ("hindsight" in css.split()) == (value == "in_sample_best")
        if value == "in_sample_best":
            assert result["dsr"] is not None and result["grid"]["trials"] == row["combinations"]
    board = table_html(page, "leaderboard-table")
    assert "in-sample best of 10: hindsight" in board and "one combination" in board
    text = html.unescape(page)
    assert "DSR, the deflated Sharpe ratio (Bailey & López de Prado, 2014): the probability that the chosen" in text
    assert "the Sharpe ratio that the best of the N combinations tried would be expected to reach by luck alone" in text
    cards = dict((v, k) for k, v in re.findall(r'<div class="card"><b>([^<]*)</b><span>([^<]*)</span>', page))
    top = table.iloc[0]
    label = "best by sharpe" + (" (in-sample best: hindsight)" if top["selection"] == "in_sample_best" else "")
    assert cards[label].startswith(top["symbol"])


def test_no_hindsight_note_for_one_combination_a_hold_out_or_a_walk_forward(finished, walked):
    first = read_report(finished["first"])
    assert banners(first) == {}  # one combination: nothing was chosen
    heads = text_heads(first, "leaderboard-table")
    assert "selection" not in heads and "DSR" not in heads and "PSR" in heads
    assert "HINDSIGHT" not in first and "in-sample best of" not in first

    sweep = read_report(finished["sweep"])  # a hold-out, ranked in sample (rank_on's default)
    notes = banners(sweep)
    assert list(notes) == ["holdout"] and "HINDSIGHT" not in sweep
    assert (
        "the rows are ranked on the in-sample figures (total_return), the ones the combination was chosen on"
        in (notes["holdout"])
    )
    assert "selection" not in text_heads(sweep, "leaderboard-table")

    notes = banners(walked["page"])
    assert list(notes) == ["walk-forward"] and "HINDSIGHT" not in walked["page"]
    assert "every figure shown is out of sample" in notes["walk-forward"]
    assert "The whole window's grid best (chosen with hindsight) is not shown" in notes["walk-forward"]


def test_a_hold_out_ranked_in_sample_labels_its_figures_and_shows_the_hold_outs_beside_them(finished):
    run = finished["sweep"]
    page, table = read_report(run), run["table"]
    heads = text_heads(page, "leaderboard-table")
    at = heads.index("IS return")
    assert heads[at : at + 6] == [
        "IS return",
        "IS buy & hold",
        "IS excess",
        "position now",
        "OOS return",
        "OOS buy & hold",
    ]
    assert "return" not in heads and "IS sharpe" in heads and "IS max DD" in heads
    all_rows = text_heads(page, "all-rows-table")
    assert "IS return" in all_rows and "OOS return" in all_rows and "return" not in all_rows
    ranked = table[table["status"] == "ok"].sort_values("rank")
    found = re.findall(r'<div class="card"><b>([^<]*)</b><span>([^<]*)</span>', page)
    cards = {html.unescape(label): html.unescape(value) for value, label in found}
    top = ranked.iloc[0]
    assert cards["best by total_return (in sample)"] == f"{top['symbol']} {top['total_return']:+.2%}"
    assert cards["median return (in sample)"] == f"{statistics.median(ranked['total_return']):+.2%}"
    assert cards["median return (out of sample)"] == f"{statistics.median(ranked['oos_total_return']):+.2%}"
    beat = sum(r > h for r, h in zip(ranked["oos_total_return"], ranked["oos_buy_hold_return"], strict=True))
    assert cards["beat buy & hold (out of sample)"] == f"{beat} of {len(ranked)}"
    assert "median return" not in cards  # every figure says which part of the window it is from
    first = read_report(finished["first"])  # no hold-out: no IS or OOS labels
    assert "IS return" not in first and "median return (in sample)" not in first


def test_a_hold_out_ranked_out_of_sample_says_so_and_shows_those_figures_first(finished, tmp_path):
    run = finished["sweep"]
    info = {**run["info"], "rank_on": "out_of_sample"}
    table = run["table"]  # the page's columns and notes only depend on the ranking column here
    page = report_page.build_report(run["plan"].results_url, table, info)
    assert "ranked on the out-of-sample figures (oos_total_return" in banners(page)["holdout"]
    heads = text_heads(page, "leaderboard-table")
    assert heads[heads.index("params") + 1 : heads.index("params") + 3] == ["OOS return", "OOS buy & hold"]


def test_a_walk_forward_shows_next_params_and_never_the_whole_windows_best(walked):
    page, table, results = walked["page"], walked["table"], walked["results"]
    for (symbol, strategy), cells in board_cells(page).items():
        result = results[symbol, strategy]
        assert cells["next params"][1] == params_label(result["next"]["params"])
        assert result["next"] == result["walk_forward"]["next"]  # the last fold's choice
        assert number(cells["OOS PSR"][1]) == result["oos"]["psr"]
        stats = result["oos"]["trade_stats"]
        assert number(cells["OOS profit factor"][1]) == stats["profit_factor"]
        assert number(cells["OOS loss streak"][1]) == stats["max_consecutive_losses"]
    # the curves' captions: the next params, not the whole window's best (params)
    captions = re.findall(
        r'<figure class="chart pair-chart" data-symbol="(\w+)" data-strategy="(\w+)".*?<figcaption>(.*?)</figcaption>',
        page,
        re.S,
    )
    assert len(captions) == 6
    for symbol, strategy, caption in captions:
        row = table.set_index(["symbol", "strategy"]).loc[(symbol, strategy)]
        assert f"({strategy}, next params {row['next_params']})" in caption
        if row["params"] != row["next_params"]:
            assert row["params"] not in caption
    assert 'class="chosen"' not in page  # the heatmaps do not outline the whole window's best


def trade_tables(page: str) -> dict[tuple[str, str], list[list[str]]]:
    """(symbol, strategy) -> the data-values of each row of its trades table."""
    found = re.findall(
        r'<table class="sortable trades" data-symbol="(\w+)" data-strategy="(\w+)"><thead>.*?</thead><tbody>(.*?)</tbody>',
        page,
        re.S,
    )
    return {(s, k): [re.findall(r'data-value="([^"]*)"', row) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]
            for s, k, body in found}  # fmt: skip


def stats_tables(page: str) -> dict[tuple[str, str], dict[str, list[str]]]:
    """(symbol, strategy) -> statistic -> the data-values per sample of its trade statistics table."""
    found = re.findall(
        r'<table class="trade-stats" data-symbol="(\w+)" data-strategy="(\w+)">(.*?)</table>', page, re.S
    )
    return {
        (symbol, strategy): {name: re.findall(r'data-value="([^"]*)"', cells)
                 for name, cells in re.findall(r'<tr data-stat="(\w+)">(.*?)</tr>', body, re.S)}
        for symbol, strategy, body in found
    }  # fmt: skip


@pytest.mark.parametrize("which", ["first", "sweep", "walked"])
def test_trades_tables_are_the_trades_files(finished, walked, which):
    import pyarrow.parquet as pq

    from backtest.simulation.trade_stats import TRADE_STAT_NAMES

    run = walked if which == "walked" else finished[which]
    page = walked["page"] if which == "walked" else read_report(run)
    tables, stats = trade_tables(page), stats_tables(page)
    assert list(tables) == [(s, k) for s, k, _ in shown_pairs(run["table"])]
    for (symbol, strategy), rows in tables.items():
        folder = Path(strategy_results_url(run["plan"].results_url, strategy))
        trades = pq.read_table(folder / f"{symbol}.trades.parquet").to_pylist()
        result = json.loads((folder / f"{symbol}.json").read_text())
        samples = {t["sample"] for t in trades}
        assert samples == (
            {"out_of_sample"}
            if which == "walked"
            else {"in_sample", "out_of_sample"}
            if which == "sweep"
            else {"in_sample"}
        )
        assert len(rows) == len(trades) > 0
        for k, (values, trade) in enumerate(zip(rows, trades, strict=True), start=1):
            sample = (
                [{"in_sample": "in sample", "out_of_sample": "out of sample"}[trade["sample"]]]
                if len(samples) > 1
                else []
            )
            exit_time = "open" if trade["exit_time"] is None else f"{trade['exit_time']:%Y-%m-%dT%H:%M:%SZ}"
            assert values == [str(k), *sample, f"{trade['entry_time']:%Y-%m-%dT%H:%M:%SZ}", exit_time,
                              {1: "long", -1: "short"}[trade["side"]],
                              "" if trade["return"] is None else repr(trade["return"]), str(trade["bars"]),
                              (trade["exit_kind"] or "").replace("_", " ")]  # fmt: skip
        parts = [result["oos"]["trade_stats"]] if which == "walked" else [result["trade_stats"]]
        if which == "sweep":
            parts.append(result["oos"]["trade_stats"])
        assert list(stats[symbol, strategy]) == list(TRADE_STAT_NAMES)
        for name, values in stats[symbol, strategy].items():
            assert [number(v) for v in values] == [part[name] for part in parts], (symbol, name)


def test_cagr_is_left_out_where_it_repeats_the_return(tmp_path):
    def page_of(bars: list[int], gap: float = 0.0) -> str:
        table = pd.DataFrame(
            [{"rank": i + 1, "symbol": f"P{i}USDT", "strategy": "sma_trend", "status": "ok", "best": True,
              "total_return": 0.3 - 0.1 * i, "cagr": 0.3 - 0.1 * i + gap, "buy_hold_return": 0.1, "bars": n}
             for i, n in enumerate(bars)]
        )  # fmt: skip
        return report_page.build_report(str(tmp_path), table, {"strategies": [{"name": "sma_trend"}]})

    one_year = page_of([8760, 8760])
    assert "cagr" not in text_heads(one_year, "leaderboard-table")
    assert "cagr is not shown: over this window of about one year it repeats the return" in one_year
    assert "the largest difference is 0.00 percentage points" in one_year
    near = page_of([8736, 8784], gap=0.004)  # 365 days +- 1: hidden, and the page says by how much they differ
    assert "cagr" not in text_heads(near, "leaderboard-table") and "difference is 0.40 percentage points" in near
    for other in (page_of([720, 720], gap=0.2), page_of([8760, 6000], gap=0.01)):  # not a year: it differs
        assert "cagr" in text_heads(other, "leaderboard-table") and "cagr is not shown" not in other
    same = page_of([720, 720], gap=0.00004)  # not a year, but the same as shown (+30.00% both): left out too
    assert "cagr" not in text_heads(same, "leaderboard-table") and "cagr is not shown" in same


def tick_positions(svg: str, axis: str = "ytick") -> list[tuple[float, float]]:
    """(value, y) of each numeric tick label of an SVG's growth-of-1 axis (its ytick groups)."""
    found = []
    for group in re.findall(rf'<g id="{axis}_\d+">(.*?)</text>', svg, re.S):
        y = re.search(r'<use [^>]*y="([-0-9.]+)"', group)
        text = re.search(r"<text[^>]*>([^<]*)$", group)
        if y and text and re.fullmatch(r"[0-9.]+", text.group(1)):
            found.append((float(text.group(1)), float(y.group(1))))
    return found


def affine_residual(x: np.ndarray, y: np.ndarray) -> float:
    slope, intercept = np.polyfit(x, y, 1)
    return float(np.abs(slope * x + intercept - y).max())


def test_equity_charts_have_a_log_scale_toggled_by_css(finished):
    page = read_report(finished["first"])
    assert page.count('<input type="checkbox" id="log-scale" class="scale-toggle">') == 1
    assert '<label for="log-scale"' in page
    css = templating.asset("report.css")
    assert ".scale-toggle:checked ~ figure.pair-chart > svg { display: none; }" in css
    assert ".scale-toggle:not(:checked) ~ figure.pair-chart > .scale-log { display: none; }" in css
    charts = re.findall(
        r'<figure class="chart pair-chart"[^>]*>(<svg.*?</svg>)\s*<div class="scale-log">(<svg.*?</svg>)\s*</div>',
        page,
        re.S,
    )
    assert len(charts) == 6
    for linear, log in charts:
        assert "growth of 1 (log scale)" in log and "growth of 1 (log scale)" not in linear
        ticks = np.array(tick_positions(linear))
        assert len(ticks) >= 3 and affine_residual(ticks[:, 0], ticks[:, 1]) < 0.01  # equal steps, equal heights
        ticks = np.array(tick_positions(log))
        assert len(ticks) >= 2 and affine_residual(np.log(ticks[:, 0]), ticks[:, 1]) < 0.01  # equal ratios
        if len(ticks) >= 3:
            assert affine_residual(ticks[:, 0], ticks[:, 1]) > 0.1


def test_leaderboards_pin_the_pair_strategy_and_ranking_columns(finished, client):
    css = templating.asset("report.css")
    assert "table.leaderboard th.pin, table.leaderboard td.pin { position: sticky;" in css
    script = templating.asset("sort.js")
    assert 'classList.contains("pin")' in script and "cell.style.left" in script
    page = several_run(finished)[1]
    heads = re.findall(
        r'<th scope="col" class="([^"]*)"><button type="button">([^<]*)</button>', table_html(page, "leaderboard-table")
    )
    pinned = [label for css_class, label in heads if "pin" in css_class.split()]
    assert pinned == ["rank", "symbol", "strategy", "sharpe"]  # the run ranks by sharpe
    assert [label for css_class, label in heads if "pin-last" in css_class.split()] == ["sharpe"]
    for cells in board_cells(page).values():
        assert [h for h, (css_class, _) in cells.items() if "pin" in css_class.split()] == pinned
    assert '<div class="board-scroll"><table class="sortable leaderboard" id="leaderboard-table">' in page
    listing = client.get("/").text  # the Backtests page's tables too, and its hindsight badge
    assert listing.count('<span class="badge hindsight"') == 1  # the run of several strategies only
    assert re.search(r'<th scope="col" class="text pin"><button type="button">symbol</button>', listing)
