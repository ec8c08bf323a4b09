"""The Backtests page of the Airflow UI, and the `rank` task's link to its run's report.

`create_app()` is a small FastAPI app that the api-server mounts at `URL_PREFIX` (plugin
interface `fastapi_apps`, see `plugins/backtest_ui_plugin.py`); the UI shows it in its navigation
(`external_views`, embedded at `/plugin/backtests`). Routes, below the prefix:

    GET /                         the latest runs of crypto_backtest_daily, newest first (?limit=20),
                                  each with its leaderboard and a link to its report
    GET /history?symbol=BTCUSDT[&strategy=..][&metric=..]   one pair's last 30 runs (rank, metric,
                                  position, chosen params) as a chart and a table
    GET /report/{date}/{run}      that run's report.html, as stored, under a CSP that runs only the
                                  report's own script (by its hash; whoever can write the results
                                  folder cannot put script into a user's browser) in a sandbox

Runs are discovered in the store (`settings.load_settings().data_url`, S3 or local) from their
results folders: `results/crypto_backtest_daily/date=<D>/run=<R>/leaderboard.parquet`. Path parts
are checked against strict patterns before they reach a storage key, so no request can read
outside the results folders. Every route requires what the Airflow UI requires: a logged-in user
(the UI's session cookie, or a bearer token) allowed to read the DAG's runs, as decided by the
configured auth manager; `create_app(require_auth=False)` is for tests only.

The page is `templates/backtests.html.j2` (the report's leaderboard table and styles, plus its own).

`BacktestReportLink` is a global operator extra link ("Backtest report") that only the `rank`
task of the DAG shows: the run's report, from the date of the run's as-of moment and its run id
(the folder name `layout.run_folder_name` makes).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from urllib.parse import urlparse

import pandas as pd
import pyarrow.fs as pafs
from airflow.sdk import BaseOperatorLink
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from backtest.data.storage import Location, list_dir, read_bytes, resolve
from backtest_airflow import layout
from backtest_airflow.layout import run_folder_name
from backtest_airflow.planning import as_of
from backtest_airflow.report import runs_view
from backtest_airflow.report.templating import CSP, PAGE_CSP, render
from backtest_airflow.settings import load_settings

log = logging.getLogger("backtest_airflow.ui")

DAG_ID = layout.DAG_ID
RANK_TASK_ID = "rank"
URL_PREFIX = "/backtests"
URL_ROUTE = "backtests"  # the UI's own route for the embedded page: /plugin/backtests
DEFAULT_LIMIT = 20
SECURITY_HEADERS = {
    "Content-Security-Policy": PAGE_CSP + "; frame-ancestors 'self'",  # the pages' form submits to 'self'
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
# A stored report is not our own output once it is in the store: besides the hash-only script-src,
# a sandbox gives it an opaque origin (no cookies, no access to the Airflow UI that frames it).
REPORT_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": CSP + "; frame-ancestors 'self'; sandbox allow-scripts",  # no form at all
}


@dataclass(frozen=True)
class RunRef:
    """One finished run found in the store."""

    date: str  # the date of the run's as-of moment (the `date=` folder)
    run: str  # the run's folder name (`run=` folder): its run id, sanitized
    folder: Location
    mtime: float  # of its leaderboard.parquet (orders runs of the same date)


def results_root(data_url: str) -> Location:
    return resolve(layout.results_root(data_url))


def list_runs(data_url: str, limit: int = DEFAULT_LIMIT) -> list[RunRef]:
    """The newest `limit` runs with a leaderboard: by date, then by leaderboard time, newest first.

    One listing per date folder visited (newest dates first, stopping once `limit` runs are
    found) and one metadata call per date for the leaderboard files.
    """
    root = results_root(data_url)
    dates = sorted(
        (n[5:] for n in list_dir(root) if n.startswith("date=") and layout.DATE_PATTERN.fullmatch(n[5:])), reverse=True
    )
    runs: list[RunRef] = []
    for date in dates:
        date_dir = root.join(f"date={date}")
        names = [n[4:] for n in list_dir(date_dir) if n.startswith("run=") and layout.RUN_PATTERN.fullmatch(n[4:])]
        if not names:
            continue
        folders = [date_dir.join(f"run={name}") for name in names]
        infos = root.fs.get_file_info([f.join(layout.LEADERBOARD_PARQUET).path for f in folders])
        found = [
            RunRef(date, name, folder, info.mtime.timestamp() if info.mtime else 0.0)
            for name, folder, info in zip(names, folders, infos, strict=True)
            if info.type == pafs.FileType.File
        ]
        runs += sorted(found, key=lambda r: (r.mtime, r.run), reverse=True)
        if len(runs) >= limit:
            break
    return runs[:limit]


def run_folder(data_url: str, date: str, run: str) -> Location:
    """The results folder of (date, run), after checking both against the strict patterns (404 otherwise)."""
    if not layout.DATE_PATTERN.fullmatch(date) or not layout.RUN_PATTERN.fullmatch(run):
        raise HTTPException(status_code=404, detail="No such run")
    return results_root(data_url).join(f"date={date}", f"run={run}")


def read_leaderboard(folder: Location) -> pd.DataFrame | None:
    data = read_bytes(folder.join(layout.LEADERBOARD_PARQUET))
    return pd.read_parquet(io.BytesIO(data)) if data else None


def base_path() -> str:
    """The api-server's path prefix (`[api] base_url`'s path, e.g. `/airflow`), or ''."""
    try:
        from airflow.configuration import conf

        base_url = conf.get("api", "base_url", fallback="") or ""
    except Exception:  # outside Airflow (unit tests of this module)
        base_url = ""
    return urlparse(base_url).path.rstrip("/")


class SlashRedirect:
    """ASGI middleware for the api-server's root app: `/backtests` redirects to `/backtests/`.

    The app is mounted below the prefix, so without it the bare prefix falls through to the UI's 404.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        prefix = f"{base_path()}{URL_PREFIX}"
        if scope["type"] == "http" and scope["path"] == prefix:
            query = scope.get("query_string", b"").decode("latin-1")
            location = prefix + "/" + (f"?{query}" if query else "")
            headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 307, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


def report_path(date: str, run_id: str) -> str:
    """The report's URL path for a run, from its as-of date and its run id."""
    return f"{base_path()}{URL_PREFIX}/report/{date}/{run_folder_name(run_id)}"


# -- access ------------------------------------------------------------------------------------


async def require_dag_run_access(request: Request) -> None:
    """Airflow's authentication and authorization, as for the UI's own DAG-run pages.

    Imported here, not at module level: other Airflow components load plugins too, and only the
    api-server needs (or has) an auth manager.
    """
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user, requires_access_dag
    from fastapi.concurrency import run_in_threadpool

    credentials = await bearer_scheme(request)
    user = await get_user(request, None, credentials)  # 401 without a session cookie or token
    check = requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=DAG_ID)
    await run_in_threadpool(check, request, user)  # 403 when the user may not read the DAG's runs


# -- pages -------------------------------------------------------------------------------------


def create_app(data_url: str | None = None, require_auth: bool = True) -> FastAPI:
    """The Backtests app; `data_url` defaults to the configured store (read per request)."""
    dependencies = [Depends(require_dag_run_access)] if require_auth else []
    app = FastAPI(title="Backtests", docs_url=None, redoc_url=None, openapi_url=None, dependencies=dependencies)

    def store() -> str:
        return data_url or load_settings().data_url

    @app.get("/", response_class=HTMLResponse, name="runs")
    def runs_page(request: Request, limit: int = Query(DEFAULT_LIMIT, ge=1, le=100)) -> HTMLResponse:
        url, refs = store(), list_runs(store(), limit)
        dated = runs_view.dates_view(url, [(ref.date, ref.run) for ref in refs])
        runs = []
        for ref in refs:
            report_url = request.url_for("report", date=ref.date, run=ref.run).path
            view = runs_view.run_view(ref.date, ref.run, ref.folder, read_leaderboard, report_url)
            runs.append({**view, **dated["runs"].get((ref.date, ref.run), {})})
        history_url = request.url_for("history").path
        page = render("backtests.html.j2", csp=Markup(PAGE_CSP), title="Backtests", dag_id=DAG_ID, limit=limit, store=url, runs=runs,
                      dates=dated["dates"], history_url=history_url)  # fmt: skip
        return HTMLResponse(page, headers=SECURITY_HEADERS)

    @app.get("/history", response_class=HTMLResponse, name="history")
    def history_page(
        request: Request,
        symbol: str = Query(..., max_length=30),
        strategy: str = Query("", max_length=64),
        metric: str = Query("", max_length=64),
    ) -> HTMLResponse:
        """One pair's figures and positions over the last runs (report.runs_view.pair_history_view)."""
        symbol = symbol.strip().upper()
        problem = runs_view.check_pair(symbol, strategy, metric)
        if problem:
            raise HTTPException(status_code=400, detail=problem)
        view = runs_view.pair_history_view(store(), symbol, strategy or None, metric or None)
        page = render("pair_history.html.j2", csp=Markup(PAGE_CSP), title=f"History of {symbol}", dag_id=DAG_ID, history=view,
                      runs_url=request.url_for("runs").path, history_url=request.url_for("history").path)  # fmt: skip
        return HTMLResponse(page, headers=SECURITY_HEADERS)

    @app.get("/report/{date}/{run}", response_class=HTMLResponse, name="report")
    def report_page(date: str, run: str) -> HTMLResponse:
        folder = run_folder(store(), date, run)
        data = read_bytes(folder.join(layout.REPORT_HTML))
        if data is None:
            raise HTTPException(status_code=404, detail="This run has no report")
        return HTMLResponse(data, headers=REPORT_HEADERS)

    return app


# -- the rank task's extra link ----------------------------------------------------------------


def _run_date(dag_id: str, run_id: str) -> str | None:
    """The date of the run's as-of moment (its results folder's `date=`), from the metadata DB."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    columns = (DagRun.data_interval_end, DagRun.logical_date, DagRun.run_after, DagRun.run_type)
    with create_session() as session:
        row = session.execute(select(*columns).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).first()
    return f"{as_of(*row):%Y-%m-%d}" if row else None


class BacktestReportLink(BaseOperatorLink):
    """The "Backtest report" button on the DAG's `rank` task: its run's report in the Backtests app.

    Registered as a global link (TaskFlow tasks are all one operator class); every other task
    gets no URL, which the UI does not show.
    """

    name = "Backtest report"

    def get_link(self, operator, *, ti_key) -> str:
        if ti_key.dag_id != DAG_ID or ti_key.task_id != RANK_TASK_ID:
            return ""
        try:
            date = _run_date(ti_key.dag_id, ti_key.run_id)
        except Exception:
            log.exception("cannot look up the date of run %s", ti_key.run_id)
            date = None
        if date is None:  # fall back to the list, at the run's entry when it is there
            return f"{base_path()}{URL_PREFIX}/"
        return report_path(date, ti_key.run_id)
