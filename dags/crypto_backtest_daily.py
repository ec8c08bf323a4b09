"""
# Daily crypto backtest

Backtests a trend-following strategy (long while the hourly close is above its moving average,
flat otherwise) on every configured pair, every day, and ranks the pairs.

1. **plan** validates the run's params and renders the jobs: the pairs in chunks (one job per
   chunk; `pairs_per_job`, by default enough to keep a run at 40 jobs), each with its exact
   container command, the backtest window ending at this run's **as-of** moment (point-in-time).
   A run of date D — scheduled, backfilled, or triggered with logical date D — is *as of D 00:00
   UTC*: it sees only the candles closed before then. A trigger with no logical date is as of the
   hour it was queued in (a trigger at 20:58 ends at 20:00). Bad params fail the run here, at
   once, with every problem in one message; nothing is retried or launched.
2. **refresh** (one mapped task per chunk, in the `backtest_exchange` pool: the exchange's API
   budget) brings the stored hourly candles up to that end (and back to the window's start plus
   warm-up, for a backfill), incrementally and idempotently; **candles** then records one asset
   event for the run (which pairs were refreshed, up to when).
3. **backtest** (one mapped task per chunk) runs the job: an AWS Batch job on Fargate in `batch`
   mode (the amazon provider's `BatchOperator`, deferrable), or the same container command in a
   local subprocess in `local` mode (in the `backtest_local` pool: one job per core).
4. **rank** gathers the results into `leaderboard.{parquet,csv,md}` and `summary.json` (the
   run's cost) in the run's results folder
   `{store}/results/crypto_backtest_daily/date=<D>/run=<run_id>/`, with `report.html` (charts;
   also on the **Backtests** page of this UI and the task's "Backtest report" link), then fails
   the run if any pair failed (unless `allow_failed_pairs`).

Trigger it with the form to override the pairs, window (or a sweep of windows, with an optional
out-of-sample hold-out), fee, lookback or ranking metric. Configuration (store URL, executor
mode, Batch queue and job definition, AWS connection, pair list) is described in the README and
in `backtest_airflow/settings.py`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import timedelta

import pendulum
from airflow.providers.amazon.aws.operators.batch import BatchOperator
from airflow.sdk import Asset, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from backtest.errors import BacktestError, InputError
from backtest_airflow import alerts, leaderboard, planning, report
from backtest_airflow.local_batch import APPLICATION_ERROR_CODES as PERMANENT_EXIT_CODES
from backtest_airflow.local_batch import LocalBatchOperator
from backtest_airflow.settings import EXCHANGE_POOL, LOCAL_POOL, asset_uri, configured_pairs, load_settings

DAG_ID = "crypto_backtest_daily"
log = logging.getLogger("backtest_airflow.dag")
SETTINGS = load_settings()
# Named by their URIs: a store moved elsewhere (BACKTEST_DATA_URL) is a new asset, not a clash.
CANDLES = Asset(asset_uri(SETTINGS.data_url, "candles"))
LEADERBOARD = Asset(asset_uri(SETTINGS.data_url, "results", DAG_ID))
# rank runs once everything before it is done, failed pairs included, but only when plan made a plan.
AFTER_PLAN = "all_done_min_one_success"


@dag(
    dag_id=DAG_ID,
    description="Backtest a strategy on every configured crypto pair, as of each day, and rank the pairs.",
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
    params={
        "pairs": Param(
            configured_pairs(),
            type="array",
            items={"type": "string"},
            minItems=1,
            description="Symbols to backtest, e.g. BTCUSDT (default: the `backtest_pairs` Variable, else pairs.txt).",
        ),
        "window": Param(
            "15d",
            type=["string", "integer"],
            description="Moving-average window: bars (360) or 12h / 15d / 2w; a sweep: 5d,10d,15d or 1d:60d:1d.",
        ),
        "fee_bps": Param(10, type="number", description="Fee per side in basis points (10 = 0.1 %)."),
        "lookback_days": Param(
            365, type="integer", description="Length of the backtest window, ending at the run's as-of moment."
        ),
        "rank_by": Param(
            "total_return", enum=list(planning.RANK_METRICS), description="Metric the leaderboard ranks by."
        ),
        "allow_failed_pairs": Param(
            False, type="boolean", description="Succeed even when some pairs failed (they stay listed as failed)."
        ),
        "holdout_days": Param(
            0,
            type="integer",
            minimum=0,
            description="Keep the last N days of the window out of sample: the best window is chosen before them.",
        ),
        "rank_on": Param(
            "in_sample", enum=list(planning.RANK_ON), description="Rank on in-sample or out-of-sample figures."
        ),
        "pairs_per_job": Param(
            0,
            type="integer",
            minimum=0,
            description=f"Pairs per Batch job (0: enough to keep a run at {planning.MAX_JOBS} jobs).",
        ),
    },
)
def crypto_backtest_daily():
    @task
    def plan() -> dict:
        """Validate params and fix the run's as-of moment: the RunPlan, as a dict.

        Bad params fail the task for good (a retry cannot fix them), with every problem listed.
        """
        context = get_current_context()
        dag_run = context["dag_run"]
        params = {**context["params"], **(dag_run.conf or {})}  # conf keys the form does not know are kept
        end = planning.as_of(context.get("data_interval_end"), context.get("logical_date"), dag_run.run_after)
        try:
            run_plan = planning.make_plan(params, SETTINGS.data_url, DAG_ID, dag_run.run_id, end)
        except InputError as exc:
            log.error("invalid params: %s", exc)  # the first thing the task log shows
            raise AirflowFailException(f"invalid params: {exc}") from None
        return asdict(run_plan)

    @task
    def jobs(run_plan: dict) -> list[dict]:
        """Render each chunk's job: what refresh and backtest map over (`BatchOperator` kwargs)."""
        run_id = get_current_context()["dag_run"].run_id
        plan = planning.RunPlan(**run_plan)
        return planning.job_kwargs(plan, SETTINGS.data_url, run_id, SETTINGS.job_vcpu, SETTINGS.job_memory_mib)

    @task(pool=EXCHANGE_POOL, map_index_template="{{ task.op_kwargs['job']['tags']['pairs'] }}")
    def refresh(job: dict, run_plan: dict) -> list[dict]:
        """Bring one job's stored candles up to the run's as-of moment, pair by pair."""
        from backtest.params import parse_time_ms
        from backtest.refresh import refresh_pair

        summaries, errors = [], {}
        for symbol in planning.job_pairs(job):  # one pair's failure does not stop the others
            try:
                summary = refresh_pair(
                    symbol,
                    SETTINGS.data_url,
                    until_ms=parse_time_ms(run_plan["end"]),
                    history_days=run_plan["history_days"],
                    source=SETTINGS.source,
                    extend_history=True,  # a backfill's window may start before the stored candles
                )
                summaries.append(asdict(summary))
            except BacktestError as exc:
                log.warning("refresh of %s failed: %s", symbol, exc)
                errors[symbol] = exc
        if errors:
            message = "; ".join(f"{symbol}: {exc}" for symbol, exc in errors.items())
            if all(exc.exit_code in PERMANENT_EXIT_CODES for exc in errors.values()):
                raise AirflowFailException(message)  # bad symbols or bad data: a retry cannot help
            raise RuntimeError(message)
        return summaries

    @task(trigger_rule=AFTER_PLAN, outlets=[CANDLES])
    def candles(run_plan: dict) -> dict:
        """One asset event per run for the candle store: the pairs refreshed, up to the as-of moment."""
        context = get_current_context()
        failed = _failed_pairs(context, "refresh", run_plan["chunks"])
        refreshed = [symbol for symbol in run_plan["pairs"] if symbol not in failed]
        if not refreshed:
            raise AirflowSkipException("no pair was refreshed")
        extra = {"end": run_plan["end"], "pairs": refreshed, "failed": sorted(failed)}
        context["outlet_events"][CANDLES].extra = extra
        return extra

    @task(trigger_rule=AFTER_PLAN, outlets=[LEADERBOARD])
    def rank(run_plan: dict) -> dict:
        """Rank the pairs' results into the leaderboard; fail afterwards if any pair failed."""
        context = get_current_context()
        failed_tasks = _failed_pairs(context, "backtest", run_plan["chunks"])
        table = leaderboard.build(run_plan, failed_tasks)
        title = f"Leaderboard {run_plan['start']} to {run_plan['end']} (window {run_plan['window']}, by {run_plan['rank_by']})"
        if table["synthetic"].eq(True).any():  # all-NaN (float) when every pair failed: no fillna(False)
            title += " - SYNTHETIC DATA"
        cost = leaderboard.cost_summary(run_plan, SETTINGS.prices)
        paths = leaderboard.write(table, run_plan["results_url"], title, cost)
        info = {**run_plan, "dag_id": DAG_ID, "run_id": context["ti"].run_id, "data_url": SETTINGS.data_url}
        paths[report.REPORT_FILE] = report.write(table, run_plan["results_url"], {**info, "title": title, "cost": cost})
        files = "\n".join(f"{name}: {url}" for name, url in paths.items())
        log.info("%s\n%s", leaderboard.to_markdown(table, title, cost), files)  # one entry, in order
        failed = table.loc[table["best"] & (table["status"] != "ok"), "symbol"].tolist()
        if failed and not run_plan["allow_failed_pairs"]:
            raise AirflowFailException(f"{len(failed)} pair(s) failed: {', '.join(failed)} (leaderboard written)")
        return {
            "leaderboard": paths["leaderboard.parquet"],
            "report": paths[report.REPORT_FILE],
            "failed": failed,
            "cost": cost,
        }

    run_plan = plan()
    chunk_jobs = jobs(run_plan)
    refreshed = refresh.partial(run_plan=run_plan).expand(job=chunk_jobs)
    if SETTINGS.executor == "batch":
        backtest = BatchOperator.partial(
            task_id="backtest",
            job_queue=SETTINGS.job_queue,
            job_definition=SETTINGS.job_definition,
            aws_conn_id=SETTINGS.aws_conn_id,
            deferrable=True,
            poll_interval=SETTINGS.poll_interval,
            trigger_rule="all_done",
            map_index_template="{{ task.tags['pairs'] }}",
        ).expand_kwargs(chunk_jobs)
    else:
        backtest = LocalBatchOperator.partial(
            task_id="backtest",
            pool=LOCAL_POOL,
            max_active_tis_per_dagrun=SETTINGS.local_max_parallel,
            trigger_rule="all_done",
            map_index_template="{{ task.tags['pairs'] }}",
        ).expand_kwargs(chunk_jobs)
    refreshed >> candles(run_plan)
    refreshed >> backtest >> rank(run_plan)


def _failed_pairs(context, task_id: str, chunks: list[list[str]]) -> dict[str, str]:
    """Pairs whose chunk's `task_id` task instance failed in this run (map index = chunk)."""
    ti = context["ti"]
    states = ti.get_task_states(dag_id=DAG_ID, task_ids=[task_id], run_ids=[ti.run_id])
    failed: dict[str, str] = {}
    for key, state in states.get(ti.run_id, {}).items():
        _, _, index = key.rpartition("_")
        if state in ("failed", "upstream_failed") and index.isdigit() and int(index) < len(chunks):
            failed.update(dict.fromkeys(chunks[int(index)], f"{task_id} task {state}"))
    return failed


crypto_backtest_daily_dag = crypto_backtest_daily()
