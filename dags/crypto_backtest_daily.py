"""
# Daily crypto backtest

Backtests strategies (by default the trend rule: long while the hourly close is above its
moving average, flat otherwise) on every configured pair, every day, and ranks the pairs.

1. **plan** validates the run's params, including each strategy's name and parameter values
   (a grid when a parameter has several), runs a quick look-ahead check of each strategy, and
   fixes the backtest window: it ends at this run's **as-of** moment (point-in-time).
   A run of date D — scheduled, backfilled, or triggered with logical date D — is *as of D 00:00
   UTC*: it sees only the candles closed before then. A trigger with no logical date is as of the
   hour it was queued in (a trigger at 20:58 ends at 20:00). Bad params, or a strategy that looks
   ahead, fail the run here, at once, with every problem in one message; nothing is retried or
   launched. **chunks** and **jobs** render what the mapped tasks run: the pairs in chunks
   (`pairs_per_job`, by default enough to keep a run at 40 jobs) and one job per chunk and
   strategy, each with its exact container command.
2. **refresh** (one mapped task per chunk, in the `backtest_exchange` pool: the exchange's API
   budget) brings the stored hourly candles up to that end (and back to the window's start plus
   warm-up, for a backfill), incrementally and idempotently; **candles** then records one asset
   event for the run (which pairs were refreshed, up to when).
3. **backtest** (one mapped task per chunk and strategy) runs the job: an AWS Batch job on Fargate
   in `batch` mode (`BacktestBatchOperator`, deferrable: the job follows its task, a retry
   re-attaches to it, at most 3 attempts in all; docs/operation.md), or the same container
   command in a local subprocess in `local` mode (in the `backtest_local` pool: one job per core).
   Each strategy's results go to `strategy=<name>/` in the run's results folder.
4. **rank** gathers the results into `leaderboard.{parquet,csv,md}` and `summary.json` (the
   run's cost) in the run's results folder
   `{store}/results/crypto_backtest_daily/date=<D>/run=<run_id>/`, with `report.html` (charts;
   also on the **Backtests** page of this UI and the task's "Backtest report" link), then fails
   the run if any pair failed (unless `allow_failed_pairs`).

Trigger it with the form to choose the pairs, the strategies and their parameters (a grid of
values, with an optional out-of-sample hold-out or a walk-forward, `walk_forward` such as
`180d:30d`: each fold chooses on its training window and trades the test window after it, and
the run ranks on the stitched test windows), fee, lookback or ranking metric; `window` is
`sma_trend`'s window. Users' strategies are modules in the project's `strategies/` folder (shipped
in the job image). Configuration (store URL, executor mode, Batch queue and job definition, AWS
connection, pair list) is described in docs/configuration.md and in `backtest_airflow/settings.py`.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task

from backtest_airflow import alerts, form, layout, tasks
from backtest_airflow.batch import BacktestBatchOperator
from backtest_airflow.jobs import chunk_kwargs, job_kwargs, job_units
from backtest_airflow.local.batch import LocalBatchOperator
from backtest_airflow.planning import RunPlan
from backtest_airflow.settings import EXCHANGE_POOL, asset_uri, load_settings

SETTINGS = load_settings()
# Named by their URIs: a store moved elsewhere (BACKTEST_DATA_URL) is a new asset, not a clash.
CANDLES = Asset(asset_uri(SETTINGS.data_url, "candles"))
LEADERBOARD = Asset(layout.results_root(asset_uri(SETTINGS.data_url)))
# Runs once everything before it is done, failed chunks included, but only when plan made a plan.
AFTER_PLAN = "all_done_min_one_success"
JOB_LABEL = "{{ task.tags['strategy'] }} {{ task.tags['pairs'] }}"  # a backtest's map index in the UI


@dag(
    dag_id=layout.DAG_ID,
    description="Backtest strategies on every configured crypto pair, as of each day, and rank the pairs.",
    schedule="@daily",
    start_date=pendulum.datetime(2020, 1, 1, tz="UTC"),  # the earliest date a backfill can reach
    catchup=False,
    max_active_runs=3,
    tags=["backtest", "crypto", "aws-batch"],
    doc_md=__doc__,
    on_failure_callback=alerts.run_failed_callbacks(SETTINGS),
    on_success_callback=alerts.run_succeeded_callbacks(SETTINGS),
    default_args={
        "owner": "quant-research",
        "retries": SETTINGS.task_retries,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": alerts.record_task_error,
    },
    params=form.params(),
)
def crypto_backtest_daily():
    @task
    def plan() -> dict:
        """Check the params and each strategy (look-ahead included), fix the as-of moment: the RunPlan."""
        context = get_current_context()
        run = context["dag_run"]
        run_plan = tasks.plan(
            dict(context["params"]),
            run.conf,
            run.run_id,
            SETTINGS.data_url,
            interval_end=context.get("data_interval_end"),
            logical_date=context.get("logical_date"),
            run_after=run.run_after,
            run_type=run.run_type,
        )
        return asdict(run_plan)

    @task
    def chunks(run_plan: dict) -> list[dict]:
        """The chunks of pairs: what refresh maps over (one task a chunk, however many strategies)."""
        return chunk_kwargs(RunPlan.from_dict(run_plan))

    @task
    def jobs(run_plan: dict) -> list[dict]:
        """One job per chunk and strategy: what backtest maps over (`BatchOperator` kwargs)."""
        run_id = get_current_context()["dag_run"].run_id
        return job_kwargs(
            RunPlan.from_dict(run_plan), SETTINGS.data_url, run_id, SETTINGS.job_vcpu, SETTINGS.job_memory_mib
        )

    @task(pool=EXCHANGE_POOL, map_index_template="{{ task.op_kwargs['chunk']['pairs'] }}")
    def refresh(chunk: dict, run_plan: dict) -> list[dict]:
        """Bring one chunk's stored candles up to the run's as-of moment."""
        return tasks.refresh(chunk["symbols"], RunPlan.from_dict(run_plan), SETTINGS)

    @task(trigger_rule=AFTER_PLAN, outlets=[CANDLES])
    def candles(run_plan: dict) -> dict:
        """One asset event per run for the candle store (not one per chunk)."""
        run_plan, context = RunPlan.from_dict(run_plan), get_current_context()
        extra = tasks.candles_event(run_plan, tasks.failed_in_run(context["ti"], "refresh", run_plan.chunks))
        context["outlet_events"][CANDLES].extra = extra
        return extra

    @task(trigger_rule=AFTER_PLAN, outlets=[LEADERBOARD])
    def rank(run_plan: dict) -> dict:
        """Rank the pairs into the leaderboard and report; fail afterwards if any pair failed."""
        run_plan, context = RunPlan.from_dict(run_plan), get_current_context()
        failed = tasks.failed_in_run(context["ti"], "backtest", job_units(run_plan))
        ranked = tasks.rank(run_plan, failed, SETTINGS, context["dag_run"].run_id)
        tasks.finish_run(run_plan, ranked, SETTINGS, context["dag_run"].run_id)  # the failure policy, then the pointer
        return ranked

    run_plan = plan()
    backtest_jobs = jobs(run_plan)
    refreshed = refresh.partial(run_plan=run_plan).expand(chunk=chunks(run_plan))
    operator = BacktestBatchOperator if SETTINGS.executor == "batch" else LocalBatchOperator
    backtest = operator.partial(
        task_id="backtest", trigger_rule="all_done", map_index_template=JOB_LABEL, **tasks.backtest_options(SETTINGS)
    ).expand_kwargs(backtest_jobs)
    refreshed >> candles(run_plan)
    refreshed >> backtest >> rank(run_plan)


crypto_backtest_daily_dag = crypto_backtest_daily()
