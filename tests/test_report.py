"""The run report (report.html) and the Backtests app of the Airflow UI, without a browser."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from backtest.storage import read_bytes, resolve
from backtest.store import CandleStore
from backtest.synthetic import synthetic_candles
from backtest_airflow import report, templating, ui
from backtest_airflow.charts import bucket_max, drawdown, load_buy_hold, load_equity, shown_pairs, thin_index
from backtest_airflow.layout import run_folder_name
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


def leaderboard_symbols(page: str, table_id: str = "leaderboard-table") -> list[str]:
    table = page[page.index(f'id="{table_id}"') :]
    table = table[: table.index("</table>")]
    return re.findall(r'<tr[^>]*data-symbol="([A-Z0-9]+)"', table)


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
    assert page.count("<svg") == 6 and page.count("</svg>") == 6
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


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict:
    """Two finished runs in one local store: 8 pairs (one failed) and a sweep with a hold-out."""
    store = str(tmp_path_factory.mktemp("report") / "store")
    pairs = PAIRS + ["DOGEUSDT", "LTCUSDT", "DOTUSDT"]
    first = make_run(store, pairs, date="2026-10-01", failed=("XRPUSDT",))
    sweep = make_run(store, PAIRS[:3], date="2026-10-02", window="1d,2d", holdout_days=5, lookback_days=20)
    return {"store": store, "first": first, "sweep": sweep}


def read_report(run: dict) -> str:
    return (Path(run["plan"].results_url) / "report.html").read_text()


def test_report_shows_every_row_failed_pairs_and_top_and_bottom_curves(finished):
    run = finished["first"]
    page = read_report(run)
    assert leaderboard_symbols(page) == run["table"]["symbol"].tolist()  # in rank order, failed last
    shown = [s for s, _ in shown_pairs(run["table"])]
    ranked = run["table"].dropna(subset=["rank"])["symbol"].tolist()
    assert shown == ranked[:3] + ranked[-3:] and len(ranked) == 7
    charts = re.findall(r'<figure class="chart pair-chart" data-symbol="([A-Z0-9]+)" data-end="(top|bottom)"', page)
    assert charts == [(s, "top") for s in ranked[:3]] + [(s, "bottom") for s in ranked[-3:]]
    assert page.count("<svg") == 7
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
    assert sorted(leaderboard_symbols(page, "all-rows-table")) == sorted(PAIRS[:3] * 2)
    assert "OOS return" in page and "hold-out starts" in page
    assert page.count('<figure class="chart pair-chart"') == 3
    assert_self_contained(page)


def test_buy_hold_and_drawdown_curves_match_the_metrics(finished):
    run = finished["first"]
    for row in run["table"].dropna(subset=["rank"]).to_dict("records"):
        times, equity = load_equity(run["plan"].results_url, row["symbol"])
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
    page = report.build_report(run["plan"].results_url, run["table"], info)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>cheap</b>" not in page and "2 jobs &lt;b&gt;cheap&lt;/b&gt;" in page
    assert "<img" not in page and "&#34;&gt;&lt;img src=x" in page  # markupsafe writes " as &#34; (was &quot;)
    assert 'id="cost-summary"' in page and "vcpu_hour: 0.04" in page
    failed_only = run["table"][run["table"]["status"] != "ok"]  # no charts: quick
    text_cost = report.build_report(run["plan"].results_url, failed_only, {**run["info"], "cost": "$0.01 <i>"})
    assert "<pre>$0.01 &lt;i&gt;</pre>" in text_cost
    assert 'id="cost-summary"' not in report.build_report(run["plan"].results_url, failed_only, run["info"])


# -- the Backtests app ---------------------------------------------------------------------------


@pytest.fixture
def client(finished) -> TestClient:
    return TestClient(ui.create_app(finished["store"], require_auth=False))


def test_backtests_page_lists_runs_newest_first_with_their_rows(client, finished):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    runs = re.findall(r'<section class="run" id="[^"]+" data-date="([^"]+)" data-run="([^"]+)"', page.text)
    assert runs == [("2026-10-02", finished["sweep"]["folder"]), ("2026-10-01", finished["first"]["folder"])]
    for key in ("first", "sweep"):
        run = finished[key]
        rows = leaderboard_symbols(page.text, f"leaderboard-{run['date']}-{run['folder']}")
        assert sorted(rows) == sorted(run["plan"].pairs)
        assert f'href="/report/{run["date"]}/{run["folder"]}"' in page.text
    assert "SYNTHETIC DATA" in page.text and "1 failed" in page.text
    assert_self_contained(page.text)
    assert "default-src 'none'" in page.headers["content-security-policy"]

    only = client.get("/", params={"limit": 1}).text
    assert finished["sweep"]["folder"] in only and 'data-date="2026-10-01"' not in only
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
    run = make_run(store, PAIRS[:2], lookback_days=10)
    page = read_bytes(resolve(run["plan"].results_url).join("report.html")).decode()
    assert sorted(leaderboard_symbols(page)) == sorted(PAIRS[:2])
    assert page.count('<figure class="chart pair-chart"') == 2 and "Buy-and-hold unavailable" not in page
    client = TestClient(ui.create_app(store, require_auth=False))
    listing = client.get("/").text
    assert f'data-date="2026-10-01" data-run="{run["folder"]}"' in listing
    assert sorted(leaderboard_symbols(listing, f"leaderboard-2026-10-01-{run['folder']}")) == sorted(PAIRS[:2])
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


def test_huge_sweeps_keep_every_row_table_out_of_the_page(tmp_path):
    """60 windows x 1,000 pairs: the (pair, window) rows stay in the Parquet/CSV files."""
    from backtest_airflow import report

    rows = [
        {"symbol": f"P{i:04d}USDT", "status": "ok", "window": f"{w}d", "window_bars": 24 * w, "best": w == 1,
         "rank": i + 1 if w == 1 else None, "total_return": 0.01 * i, "buy_hold_return": 0.0}
        for i in range(100)
        for w in range(1, 52)
    ]  # fmt: skip
    table = pd.DataFrame(rows)
    assert len(table) > report.MAX_ALL_ROWS
    page = report.build_report(str(tmp_path), table, {"windows": [f"{w}d" for w in range(1, 52)]})
    assert 'id="all-rows-table"' not in page
    assert f"All {len(table)} (pair, window) rows are in leaderboard.parquet" in page
    assert page.count('data-symbol="P0099USDT"') == 1  # the best-window table still lists every pair


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
    assert page.status_code == 200  # was 500 for the whole page
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
    page = report.build_report(run["plan"].results_url, _with_hostile_row(failed_only), {**run["info"], "title": title})
    assert_escaped(page)
    assert "<title>&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x&gt;</title>" in page
    assert page.count("<script>") == 1  # the page's own

    store = tmp_path / "store"
    _write_runs(store, {"hostile": _with_hostile_row(run["table"])})
    listing = TestClient(ui.create_app(str(store), require_auth=False)).get("/").text
    assert '<section class="run" id="run-2026-11-01-hostile"' in listing  # shown, not "unreadable"
    assert_escaped(listing)
    assert listing.count("<script>") == 1
