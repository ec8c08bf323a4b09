"""
# Daily crypto backtest

Backtests a trend-following strategy (long while the hourly close is above its moving average,
flat otherwise) on every configured pair, every day, and ranks the pairs.

1. **plan** validates the run's params and renders the jobs: the pairs in chunks (one job per
   chunk; `pairs_per_job`, by default enough to keep a run at 40 jobs), each with its exact
   container command, the backtest window ending at this run's data-interval end (point-in-time:
   a run or backfill of date D sees only candles closed by the end of D's interval).
2. **refresh** (one mapped task per chunk) brings the stored hourly candles up to that end (and
   back to the window's start plus warm-up, for a backfill), incrementally and idempotently.
3. **backtest** (one mapped task per chunk) runs the job: an AWS Batch job on Fargate in `batch`
   mode (the amazon provider's `BatchOperator`, deferrable), or the same container command in a
   local subprocess in `local` mode.
4. **rank** gathers the results into `leaderboard.{parquet,csv,md}` and `summary.json` (the
   run's cost) in the run's results folder
   `{store}/results/crypto_backtest_daily/date=<D>/run=<run_id>/`, with `report.html` (charts;
   also on the **Backtests** page of this UI and the task's "Backtest report" link), then fails
   the run if any pair failed (unless `allow_failed_pairs`).

Trigger it with the form to override the pairs, window (or a sweep of windows, with an optional
out-of-sample hold-out), fee, lookback or ranking metric. Configuration (store URL, executor
mode, Batch queue and job definition, AWS connection, pair list) is described in the README and
in `plugins/backtest_airflow/settings.py`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.amazon.aws.operators.batch import BatchOperator
from airflow.sdk import Asset, Param, Variable, dag, get_current_context, task

from backtest_airflow import alerts, leaderboard, planning, report
from backtest_airflow.local_batch import LocalBatchOperator
from backtest_airflow.settings import PAIRS_VARIABLE, asset_uri, load_settings, pairs_from_file, parse_pairs_variable

DAG_ID = "crypto_backtest_daily"
SETTINGS = load_settings()
CANDLES = Asset(name="crypto_backtest_candles", uri=asset_uri(SETTINGS.data_url, "candles"))
LEADERBOARD = Asset(name="crypto_backtest_leaderboard", uri=asset_uri(SETTINGS.data_url, "results", DAG_ID))


@dag(
    dag_id=DAG_ID,
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
            pairs_from_file(),
            type="array",
            items={"type": "string"},
            description="Symbols to backtest, e.g. BTCUSDT (default: the configured pair list).",
        ),
        "window": Param(
            "15d",
            type=["string", "integer"],
            description="Moving-average window: bars (360) or 12h / 15d / 2w; a sweep: 5d,10d,15d or 1d:60d:1d.",
        ),
        "fee_bps": Param(10, type="number", description="Fee per side in basis points (10 = 0.1 %)."),
        "lookback_days": Param(
            365, type="integer", description="Length of the backtest window, ending at the data-interval end."
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
    def plan() -> list[dict]:
        """Validate params, fix the window from the data interval, render every pair's job.

        Returns the jobs (what `backtest` maps over); the run plan goes to XCom key `plan`.
        """
        context = get_current_context()
        params = dict(context["params"])
        if params.get("pairs") == pairs_from_file():  # the default list: a Variable may replace it
            configured = Variable.get(PAIRS_VARIABLE, default=None)
            if configured:
                params["pairs"] = parse_pairs_variable(configured)
        dag_run = context["dag_run"]
        interval_start, interval_end = context["data_interval_start"], context["data_interval_end"]
        run_plan = planning.make_plan(params, SETTINGS.data_url, DAG_ID, dag_run.run_id, interval_start, interval_end)
        jobs = planning.job_kwargs(
            run_plan, SETTINGS.data_url, dag_run.run_id, interval_start, SETTINGS.job_vcpu, SETTINGS.job_memory_mib
        )
        context["ti"].xcom_push(key="plan", value=run_plan.__dict__)
        return jobs

    @task(outlets=[CANDLES], map_index_template="{{ pairs_label }}")
    def refresh(symbols: list[str], run_plan: dict) -> list[dict]:
        """Bring one chunk's stored candles up to the run's data-interval end, pair by pair."""
        from dataclasses import asdict

        from airflow.sdk.exceptions import AirflowFailException

        from backtest.errors import BacktestError
        from backtest.params import parse_time_ms
        from backtest.refresh import refresh_pair
        from backtest_airflow.local_batch import APPLICATION_ERROR_CODES as PERMANENT_EXIT_CODES

        get_current_context()["pairs_label"] = planning.pairs_label(symbols)
        summaries, errors = [], {}
        for symbol in symbols:  # one pair's failure does not stop the others
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
                print(f"refresh of {symbol} failed: {exc}")
                errors[symbol] = exc
        if errors:
            message = "; ".join(f"{symbol}: {exc}" for symbol, exc in errors.items())
            if all(exc.exit_code in PERMANENT_EXIT_CODES for exc in errors.values()):
                raise AirflowFailException(message)  # bad symbols or bad data: a retry cannot help
            raise RuntimeError(message)
        return summaries

    @task(trigger_rule="all_done", outlets=[LEADERBOARD])
    def rank(run_plan: dict) -> dict:
        """Rank the pairs' results into the leaderboard; fail afterwards if any pair failed."""
        from airflow.sdk.exceptions import AirflowFailException

        context = get_current_context()
        failed_tasks = _failed_pairs(context, run_plan["chunks"])
        table = leaderboard.build(run_plan, failed_tasks)
        title = f"Leaderboard {run_plan['start']} to {run_plan['end']} (window {run_plan['window']}, by {run_plan['rank_by']})"
        if table["synthetic"].eq(True).any():  # all-NaN (float) when every pair failed: no fillna(False)
            title += " - SYNTHETIC DATA"
        cost = leaderboard.cost_summary(run_plan, SETTINGS.prices)
        paths = leaderboard.write(table, run_plan["results_url"], title, cost)
        info = {**run_plan, "dag_id": DAG_ID, "run_id": context["ti"].run_id, "data_url": SETTINGS.data_url}
        paths[report.REPORT_FILE] = report.write(table, run_plan["results_url"], {**info, "title": title, "cost": cost})
        print(leaderboard.to_markdown(table, title, cost))
        for name, url in paths.items():
            print(f"{name}: {url}")
        failed = table.loc[table["best"] & (table["status"] != "ok"), "symbol"].tolist()
        if failed and not run_plan["allow_failed_pairs"]:
            raise AirflowFailException(f"{len(failed)} pair(s) failed: {', '.join(failed)} (leaderboard written)")
        return {
            "leaderboard": paths["leaderboard.parquet"],
            "report": paths[report.REPORT_FILE],
            "failed": failed,
            "cost": cost,
        }

    jobs = plan()
    run_plan = jobs["plan"]
    refreshed = refresh.partial(run_plan=run_plan).expand(symbols=jobs.map(planning.job_pairs))
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
        ).expand_kwargs(jobs)
    else:
        backtest = LocalBatchOperator.partial(
            task_id="backtest",
            max_active_tis_per_dagrun=SETTINGS.local_max_parallel,
            trigger_rule="all_done",
            map_index_template="{{ task.tags['pairs'] }}",
        ).expand_kwargs(jobs)
    refreshed >> backtest >> rank(run_plan)


def _failed_pairs(context, chunks: list[list[str]]) -> dict[str, str]:
    """Pairs whose chunk's backtest task instance failed in this run (map index = chunk)."""
    ti = context["ti"]
    states = ti.get_task_states(dag_id=DAG_ID, task_ids=["backtest"], run_ids=[ti.run_id])
    failed: dict[str, str] = {}
    for key, state in states.get(ti.run_id, {}).items():
        _, _, index = key.rpartition("_")
        if state in ("failed", "upstream_failed") and index.isdigit() and int(index) < len(chunks):
            failed.update(dict.fromkeys(chunks[int(index)], f"backtest task {state}"))
    return failed


crypto_backtest_daily_dag = crypto_backtest_daily()
