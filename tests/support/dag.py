"""The project's daily DAG loaded in-process with the settings a test chooses, and a finished daily
run's results folder made by calling the job and rank code directly (no Airflow run)."""

from __future__ import annotations

import dataclasses
import importlib.util
import uuid
from datetime import datetime
from pathlib import Path

import pandas as pd

from backtest.data.refresh import refresh_pair
from backtest.job import RunSpec, backtest, write_result
from backtest.params import parse_time_ms
from backtest.simulation.metrics import SELECT_METRICS
from backtest.simulation.walkforward import parse_walk_forward
from backtest_airflow import layout, planning, tasks
from backtest_airflow.jobs import job_kwargs
from backtest_airflow.layout import run_folder_name
from backtest_airflow.planning import RunPlan, make_plan
from backtest_airflow.run_strategies import grid_of
from backtest_airflow.settings import load_settings
from tests.support import REPO, environment

DAG_FILE = REPO / "dags" / "crypto_backtest_daily.py"


def import_dag_file(path: Path = DAG_FILE):
    """Execute a DAG file as a fresh module (settings are read at parse time)."""
    spec = importlib.util.spec_from_file_location(f"dag_{path.stem}_{uuid.uuid4().hex[:8]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_daily_dag(**settings: str):
    """The daily DAG parsed under the given BACKTEST_* settings."""
    with environment(**settings):
        module = import_dag_file()
    return module.crypto_backtest_daily_dag


def run_daily_dag(data_url: Path | str, conf: dict, logical_date: datetime, **settings: str):
    """One run of the daily DAG under dag.test(); its DagRun. The DAG is parsed in local mode on
    synthetic candles with the store at `data_url`, unless `settings` (BACKTEST_*) say otherwise.

    The settings apply to parsing this DAG object only: dag.test() also parses the DAG folder into
    the session's DB, with the session's settings."""
    settings = {
        "BACKTEST_EXECUTOR": "local",
        "BACKTEST_SOURCE": "synthetic",
        "BACKTEST_DATA_URL": str(data_url),
        **settings,
    }
    return load_daily_dag(**settings).test(logical_date=logical_date, run_conf=conf)


def planned_run(dag, dag_run, data_url, conf: dict) -> tuple[RunPlan, list[dict]]:
    """A dag.test run's plan and jobs as `planning` and `jobs` make them (what its tasks ran), from its DAG's
    params and `conf`."""
    params = {name: dag.params[name] for name in dag.params} | conf
    end = planning.as_of(dag_run.data_interval_end, dag_run.logical_date, dag_run.run_after, dag_run.run_type)
    plan = make_plan(params, str(data_url), dag.dag_id, dag_run.run_id, end)
    settings = load_settings()
    return plan, job_kwargs(plan, str(data_url), dag_run.run_id, settings.job_vcpu, settings.job_memory_mib)


def make_run(
    data_url: str,
    pairs: list[str],
    date: str = "2026-10-01",
    run_id: str | None = None,
    failed: tuple = (),
    lookback_days: int = 30,
    window: str = "2d",
    holdout_days: int = 0,
    strategies: list[dict] | None = None,
    rank_by: str = "total_return",
    walk_forward: str = "",
) -> dict:
    """Refresh synthetic candles, backtest every (pair, strategy) not in `failed` into the strategy's
    folder, as the jobs do, then rank as the DAG does.

    The run's strategies: `strategies` (the DAG param, planned by `make_plan`) when given, else
    sma_trend with `window`. `failed` holds symbols (every strategy fails) or (symbol, strategy) pairs;
    `walk_forward` is the DAG param (the jobs' --walk-forward)."""
    as_of = datetime.fromisoformat(f"{date}T00:00:00+00:00")  # a run of date D is as of D 00:00
    run_id = run_id or f"manual__{as_of.isoformat()}"
    params = {"pairs": pairs, "lookback_days": lookback_days, "fee_bps": 10, "holdout_days": holdout_days}
    params.update({"window": window} if strategies is None else {"strategies": strategies}, rank_by=rank_by)
    params["walk_forward"] = walk_forward
    plan = make_plan(params, data_url, layout.DAG_ID, run_id, as_of)
    select_by = rank_by if rank_by in SELECT_METRICS else "total_return"  # as the jobs' --select-by
    failed_tasks = {}
    for symbol in pairs:
        refresh_pair(
            symbol, data_url, until_ms=parse_time_ms(plan.end), history_days=plan.history_days, source="synthetic"
        )
        for entry in plan.strategies:
            if symbol in failed or (symbol, entry["name"]) in failed:
                failed_tasks[(symbol, entry["name"])] = "backtest task failed"
                continue
            spec = RunSpec(
                symbol=symbol,
                grid=grid_of(entry),
                fee_bps=plan.fee_bps,
                start_ms=parse_time_ms(plan.start),
                end_ms=parse_time_ms(plan.end),
                data_url=data_url,
                holdout_days=plan.holdout_days,
                select_by=select_by,
                walk_forward=parse_walk_forward(plan.walk_forward) if plan.walk_forward else None,
            )
            result, equity = backtest(spec)
            write_result(layout.strategy_results_url(plan.results_url, entry["name"]), result, equity)
    settings = dataclasses.replace(load_settings(), data_url=data_url)
    ranked = tasks.rank(plan, failed_tasks, settings, run_id)  # what `rank` runs
    table = pd.read_parquet(ranked["leaderboard"])
    info = {**dataclasses.asdict(plan), "dag_id": layout.DAG_ID, "run_id": run_id, "data_url": data_url}
    return {
        "plan": plan,
        "table": table,
        "info": info,
        "date": date,
        "run_id": run_id,
        "folder": run_folder_name(run_id),
    }
