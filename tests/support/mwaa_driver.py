"""Runs inside the MWAA bundle's virtualenv (tests/test_mwaa_bundle.py), not in the repo's: parses
the configured DAG folder with Airflow's DagBag, loads the plugins folder, runs the daily DAG once
with dag.test() and prints one JSON object of what happened. Imports nothing of the checkout.

    python mwaa_driver.py '{"pairs": [...]}' 2026-10-01T00:00:00+00:00
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from importlib import metadata

DAG_ID = "crypto_backtest_daily"
VERSIONS = ("apache-airflow", "apache-airflow-providers-amazon", "pandas", "pyarrow", "numpy", "crypto-backtest")


def main(conf: dict, logical_date: datetime) -> dict:
    from airflow import plugins_manager
    from airflow.configuration import conf as airflow_conf
    from airflow.dag_processing.dagbag import DagBag

    import backtest
    import backtest_airflow
    from backtest_airflow.settings import load_settings

    bag = DagBag(dag_folder=airflow_conf.get("core", "dags_folder"))
    report = {
        "import_errors": dict(bag.import_errors),
        "dag_ids": sorted(bag.dag_ids),
        "plugins": sorted(plugin["name"] for plugin in plugins_manager.get_plugin_info()),
        "plugin_errors": plugins_manager.get_import_errors(),
        "fastapi_apps": [app["name"] for app in plugins_manager.get_fastapi_plugins()[0]],
        "modules": {"backtest": backtest.__file__, "backtest_airflow": backtest_airflow.__file__},
        "versions": {name: metadata.version(name) for name in VERSIONS},
        "settings": {"executor": load_settings().executor, "data_url": load_settings().data_url},
        "sys_path": sys.path,
    }
    dag = bag.get_dag(DAG_ID)
    run = dag.test(logical_date=logical_date, run_conf=conf)
    report["run_state"] = value(run.state)
    report["tasks"] = {f"{ti.task_id}[{ti.map_index}]": value(ti.state) for ti in run.get_task_instances()}
    report["backtest_operator"] = dag.get_task("backtest").operator_class.__name__
    return report


def value(state) -> str | None:
    """A state enum's value (`success`), not its repr."""
    return getattr(state, "value", state)


if __name__ == "__main__":
    result = main(json.loads(sys.argv[1]), datetime.fromisoformat(sys.argv[2]))
    print("MWAA_DRIVER " + json.dumps(result, default=str))
