"""Airflow plugin: the **Backtests** page in the Airflow UI and the `rank` task's "Backtest report" link.

- `fastapi_apps`: the api-server mounts the Backtests app (`backtest_airflow.ui`) at `/backtests`;
- `external_views`: a top-level entry "Backtests" in the UI's navigation, which shows that app
  inside the UI at `/plugin/backtests`;
- `fastapi_root_middlewares`: `/backtests` (no trailing slash) redirects to `/backtests/`;
- `global_operator_extra_links`: "Backtest report" on the `rank` task of `crypto_backtest_daily`.

Discovered by Airflow's plugin manager in the plugins folder; the code lives in `backtest_airflow.ui`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

from backtest_airflow import ui


class BacktestUIPlugin(AirflowPlugin):
    name = "backtest_ui"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": ui.create_app(), "url_prefix": ui.URL_PREFIX, "name": "Backtests"}
    ]
    fastapi_root_middlewares: ClassVar[list[dict[str, Any]]] = [
        {"middleware": ui.SlashRedirect, "name": "Backtests: /backtests redirects to /backtests/"}
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "Backtests",
            "href": f"{ui.base_path()}{ui.URL_PREFIX}/",
            "url_route": ui.URL_ROUTE,
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
    global_operator_extra_links: ClassVar[list[Any]] = [ui.BacktestReportLink()]
