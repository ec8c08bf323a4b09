"""The daily DAG's task bodies: plain typed functions of a `RunPlan`, called by the DAG's tasks
(dags/crypto_backtest_daily.py only wires them) and by the tests, which so test the real thing.

Failures that a retry cannot fix raise `AirflowFailException` (the task fails at once, no retry);
anything else raises an ordinary exception, retried with the DAG's back-off.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from backtest.data.refresh import refresh_pair
from backtest.errors import BacktestError, InputError
from backtest.params import parse_time_ms
from backtest_airflow import layout, planning, pools
from backtest_airflow.batch import execution_timeout as batch_execution_timeout
from backtest_airflow.planning import RunPlan
from backtest_airflow.report import changes, history, leaderboard, leaderboard_files, page, portfolio
from backtest_airflow.report import cost as run_cost
from backtest_airflow.run_strategies import lookahead_problems
from backtest_airflow.settings import LOCAL_POOL, Settings

if TYPE_CHECKING:
    from airflow.sdk.types import RuntimeTaskInstanceProtocol

log = logging.getLogger("backtest_airflow.tasks")
K = TypeVar("K")  # what a mapped task instance works on: a pair, or a (pair, strategy) pair


def plan(
    params: dict[str, Any],
    conf: dict[str, Any] | None,
    run_id: str,
    data_url: str,
    *,
    interval_end: datetime | None,
    logical_date: datetime | None,
    run_after: datetime,
    run_type: str | None = None,
) -> RunPlan:
    """The run's plan from its params (conf keys the form does not know included, to be refused).

    Then the quick look-ahead check of every strategy the run uses: one that fails it is refused
    (for good, before any refresh or job), as `python -m backtest check-strategy` would refuse it.
    Last, the pools the DAG's tasks use must exist (asked of the REST API, `pools.missing_pools`):
    the run fails here, at once, rather than wait in `scheduled` for ever on one that does not.
    """
    end = planning.as_of(interval_end, logical_date, run_after, run_type)
    try:
        run_plan = planning.make_plan({**params, **(conf or {})}, data_url, layout.DAG_ID, run_id, end)
    except InputError as exc:
        log.error("invalid params: %s", exc)  # the first thing the task log shows
        raise AirflowFailException(f"invalid params: {exc}") from None
    problems = lookahead_problems(run_plan.strategies)
    if problems:
        log.error("look-ahead check failed: %s", "; ".join(problems))
        raise AirflowFailException(f"look-ahead check failed: {'; '.join(problems)}")
    missing = pools.missing_pools(pools.running_dag_pools())
    if missing:
        log.error("%s", pools.missing_message(missing))
        raise AirflowFailException(pools.missing_message(missing))
    return run_plan


def backtest_options(settings: Settings) -> dict[str, Any]:
    """What the `backtest` task's operator is given besides its id, trigger rule and label: in `batch`
    mode `BacktestBatchOperator`'s queue, job definition, connection and polling (deferrable: the
    triggerer polls Batch) and the execution timeout that covers every attempt of the job (a run
    ends instead of hanging on a job stuck RUNNABLE); in `local` mode the local runner's pool and
    parallelism (one job per core)."""
    if settings.executor == "batch":
        return {
            "job_queue": settings.job_queue,
            "job_definition": settings.job_definition,
            "aws_conn_id": settings.aws_conn_id,
            "deferrable": True,
            "poll_interval": settings.poll_interval,
            "execution_timeout": batch_execution_timeout(settings.job_timeout_seconds),
        }
    return {"pool": LOCAL_POOL, "max_active_tis_per_dagrun": settings.local_max_parallel}


def refresh(symbols: list[str], plan: RunPlan, settings: Settings) -> list[dict]:
    """Bring one chunk's stored candles up to the run's as-of moment, pair by pair.

    One pair's failure does not stop the others; the task fails afterwards, for good when every
    failure is permanent (bad symbols, bad data).
    """
    summaries, errors = [], {}
    for symbol in symbols:
        try:
            summary = refresh_pair(
                symbol,
                settings.data_url,
                until_ms=parse_time_ms(plan.end),
                history_days=plan.history_days,
                source=settings.source,
                extend_history=True,  # a backfill's window may start before the stored candles
            )
            summaries.append(asdict(summary))
        except BacktestError as exc:
            log.warning("refresh of %s failed: %s", symbol, exc)
            errors[symbol] = exc
    if errors:
        message = "; ".join(f"{symbol}: {exc}" for symbol, exc in errors.items())
        if all(exc.permanent for exc in errors.values()):
            raise AirflowFailException(message)
        raise RuntimeError(message)
    return summaries


def task_states(states: dict[str, str], task_ids: Collection[str]) -> dict[tuple[str, int], str]:
    """One run's task states from the task API (`get_task_states`), by (task id, map index).

    The API keys an unmapped task instance by its task id and a mapped one `<task id>_<map index>`;
    `task_ids` (the DAG's) tells the two apart. Map index -1: not mapped.
    """
    parsed: dict[tuple[str, int], str] = {}
    for key, state in states.items():
        task_id, _, index = key.rpartition("_")
        if key in task_ids:
            parsed[(key, -1)] = state
        elif task_id in task_ids and index.isdigit():
            parsed[(task_id, int(index))] = state
    return parsed


def failed_pairs(states: dict[tuple[str, int], str], task_id: str, units: Sequence[Sequence[K]]) -> dict[K, str]:
    """What the failed instances of the mapped task `task_id` were for, from `task_states`: map index
    i worked on `units[i]`, the pairs of a refresh chunk (`plan.chunks`) or the (pair, strategy)
    pairs of a backtest job (`jobs.job_units(plan)`)."""
    failed: dict[K, str] = {}
    for (task, index), state in states.items():
        if task == task_id and 0 <= index < len(units) and state in ("failed", "upstream_failed"):
            failed.update(dict.fromkeys(units[index], f"{task_id} task {state}"))
    return failed


def failed_in_run(ti: RuntimeTaskInstanceProtocol, task_id: str, units: Sequence[Sequence[K]]) -> dict[K, str]:
    """`failed_pairs` of this run's instances of the mapped task `task_id`, their states asked of the
    task API by the running task instance `ti` (the `candles` and `rank` tasks')."""
    states = ti.get_task_states(dag_id=layout.DAG_ID, task_ids=[task_id], run_ids=[ti.run_id])
    return failed_pairs(task_states(states.get(ti.run_id, {}), [task_id]), task_id, units)


def candles_event(plan: RunPlan, failed: dict[str, str]) -> dict:
    """The candle asset's event for the run: the pairs refreshed up to when; the task skips (no
    event) when no pair was."""
    refreshed = [symbol for symbol in plan.pairs if symbol not in failed]
    if not refreshed:
        raise AirflowSkipException("no pair was refreshed")
    return {"end": plan.end, "pairs": refreshed, "failed": sorted(failed)}


def rank(plan: RunPlan, failed_tasks: dict[tuple[str, str], str], settings: Settings, run_id: str) -> dict:
    """Write the run's leaderboard, cost summary, portfolios and report; log the leaderboard once.

    `failed_tasks`: why a (pair, strategy) has no result when its backtest task failed
    (`failed_in_run(ti, "backtest", jobs.job_units(plan))`).

    Returns what the task returns (file URLs, failed pairs, cost, portfolios); `fail_if_pairs_failed` then
    applies the run's failure policy, after everything is written.
    """
    table = leaderboard.build(plan, failed_tasks)
    date = plan.end[:10]  # the as-of date: the run's `date=` folder
    previous = history.previous_run(settings.data_url, date)
    before = history.read_leaderboard(previous.results_url) if previous else None
    table, missing = history.changes(table, before, plan.metric)  # day over day: rank_prev, position_prev, ...
    title = leaderboard_files.title(plan, table)
    cost = run_cost.cost_summary(plan, settings.prices)
    paths = leaderboard_files.write(table, plan.results_url, title, cost, plan.rank_by)
    paths[layout.PORTFOLIO_PARQUET], portfolios = portfolio.write(plan, table, settings.data_url)
    info = {**asdict(plan), "dag_id": layout.DAG_ID, "run_id": run_id, "data_url": settings.data_url}
    settings_changed = history.settings_changes(table, before)  # not like for like when non-empty
    info["changes"] = changes.changes_view(table, previous, missing, date, plan.metric, settings_changed)
    info["history"] = changes.history_view(settings.data_url, date, table, plan.metric)
    paths[layout.REPORT_HTML] = page.write(table, plan.results_url, {**info, "title": title, "cost": cost})
    files = "\n".join(f"{name}: {url}" for name, url in paths.items())
    log.info("%s\n%s", leaderboard_files.to_markdown(table, title, cost, plan.rank_by), files)  # one entry, in order
    return {
        "leaderboard": paths[layout.LEADERBOARD_PARQUET],
        "report": paths[layout.REPORT_HTML],
        "failed": table.loc[table["best"] & (table["status"] != "ok"), "symbol"].tolist(),
        "cost": cost,
        "portfolio": portfolios,  # per label: its pairs, each curve's metrics, the selection (report.portfolio)
        "previous_run": previous.results_url if previous else None,
        "signal_changes": [history.signal_text(c) for c in history.signal_changes(table)],
    }


def finish_run(plan: RunPlan, ranked: dict, settings: Settings, run_id: str) -> None:
    """The end of `rank`: apply the failure policy, then (only for a run that succeeds) mark it
    as its date's latest successful run, the one the next date's run compares with."""
    fail_if_pairs_failed(plan, ranked)
    history.write_pointer(settings.data_url, plan.end[:10], run_id)


def fail_if_pairs_failed(plan: RunPlan, ranked: dict) -> None:
    """The run fails when a pair failed, unless the run allows it (the leaderboard is written either way)."""
    failed = ranked["failed"]
    if failed and not plan.allow_failed_pairs:
        raise AirflowFailException(f"{len(failed)} pair(s) failed: {', '.join(failed)} (leaderboard written)")
