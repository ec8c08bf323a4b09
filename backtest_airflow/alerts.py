"""Alerts: a message when a run fails, a short digest when it succeeds.

With `BACKTEST_NOTIFY_SNS_TOPIC_ARN` set, messages go to that topic through the amazon provider's
`SnsNotifier` (connection `BACKTEST_AWS_CONN_ID`, the topic's region); otherwise each is one log line.

Airflow 3.3 runs a DAG-level callback once per run, when the run gets its final state (after
retries; also on a deadlock), in the dag-processor: it parses the DAG file again and passes the
template context of one task instance (the failed one that ended last, or the last to succeed) plus
`reason`. Its `ti` reaches the task API there (`xcom_pull`, `get_task_states`, connections); no
exception. A task-level `on_failure_callback` has the exception but runs per failed task instance
(40 failed chunks: 40 alerts). So the alert is DAG-level; `record_task_error` (the tasks' callback)
keeps each error text as an XCom for it. Pairs and cost: from the files `rank` writes in the run's
results folder (named in the plan's XCom), also when it fails the run.

`dag.test()` calls DAG-level callbacks in its own process, without the task API: there a failure
names only the context's task instance, and the results folder is named as `planning.make_plan` does.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from backtest.data.storage import read_bytes, resolve
from backtest_airflow import layout
from backtest_airflow.planning import as_of, ranking_column
from backtest_airflow.report.history import signal_changes, signal_text
from backtest_airflow.settings import Settings, load_settings
from backtest_airflow.tasks import task_states

log = logging.getLogger(__name__)

Context = Mapping[str, Any]
ERROR_KEY = "alert_error"
TOP_N = 5
MAX_LISTED = 20  # failed tasks or pairs listed in one message; the rest are counted
RATIO_METRICS = ("sharpe", "sortino", "calmar")  # the other ranking metrics are fractions


def record_task_error(context: Context) -> None:
    """Task-level on_failure_callback: keep the error text for the run's failure alert."""
    if (error := context.get("exception")) is not None:
        context["ti"].xcom_push(key=ERROR_KEY, value=_clip(f"{type(error).__name__}: {error}", 500))


def run_failed_callbacks(settings: Settings | None = None) -> list[Callable[[Context], None]]:
    """The DAG's `on_failure_callback`: one alert per failed run."""
    settings = settings or load_settings()

    def alert_run_failed(context: Context) -> None:
        board, _, report = run_results(context, settings.data_url)
        send(*failure_message(context, failed_tasks(context), board, report), context, settings)

    return [alert_run_failed]


def run_succeeded_callbacks(settings: Settings | None = None) -> list[Callable[[Context], None]]:
    """The DAG's `on_success_callback`: the run's digest."""
    settings = settings or load_settings()

    def alert_run_succeeded(context: Context) -> None:
        send(*success_message(context, *run_results(context, settings.data_url)), context, settings)

    return [alert_run_succeeded]


def failure_message(
    context: Context, tasks: list[tuple[str, str | None]], board: pd.DataFrame | None, report: str | None
) -> tuple[str, str]:
    """Which run failed, which tasks failed and why, which pairs failed and why."""
    subject, lines = _head(context, "FAILED")
    lines.append(f"Failed tasks ({len(tasks)}):")
    lines += _listed([f"- {label}: {error or 'no error text here, see the task log'}" for label, error in tasks])
    lines += ["", *_failed_pairs(board)] if board is not None else []
    lines += ["", f"Report: {report}"] if report else []
    return subject, "\n".join(lines)


def success_message(
    context: Context, board: pd.DataFrame | None, cost: dict | None, report: str | None
) -> tuple[str, str]:
    """The signal changes since the previous run first, then the top pairs by the run's ranking
    metric, the failed pairs, the run's cost."""
    subject, lines = _head(context, "succeeded")
    if board is None:
        lines.append("No leaderboard in the run's results folder.")
    else:
        changes = signal_changes(board)
        if "position_prev" in board and board["position_prev"].notna().any():
            lines.append(f"Signal changes since the previous run ({len(changes)}):")
            lines += _listed([f"- {signal_text(change)}" for change in changes]) or ["- none"]
            lines.append("")
        params = context.get("params") or {}
        metric = params.get("rank_by", "total_return")
        column = ranking_column(metric, params.get("rank_on"), params.get("walk_forward"))
        ranked = board[board["rank"].notna()].sort_values("rank")
        lines.append(f"Top {min(TOP_N, len(ranked))} of {len(ranked)} by {column}:")
        for row in ranked.head(TOP_N).to_dict("records"):
            also = "" if metric == "total_return" else f" (total return {_format(row['total_return'], '')})"
            name = _name(row, _several(board))
            lines.append(f"{int(row['rank']):>3}. {name:<12} {_format(row[column], metric)}{also}")
        lines += ["", *_failed_pairs(board)]
    lines += ["", f"Cost: {cost['text']}" if cost else "Cost: not recorded"]
    lines += [f"Report: {report}"] if report else []
    return subject, "\n".join(lines)


def _label(task_id: str, map_index: int) -> str:
    return task_id if map_index < 0 else f"{task_id}[{map_index}]"


def _head(context: Context, outcome: str) -> tuple[str, list[str]]:
    """The subject and the first lines: which run, why it failed, its dates."""
    dag_id, run_id = getattr(context.get("dag"), "dag_id", "?"), context.get("run_id")
    logical, end = context.get("logical_date"), _as_of(context)
    why = f" ({context['reason']})" if outcome == "FAILED" and context.get("reason") else ""
    return f"{dag_id} {outcome.lower()}: {run_id}", [
        f"DAG {dag_id}, run {run_id}: {outcome}{why}",
        f"Logical date {logical.isoformat() if logical else '-'}, as of {end.isoformat() if end else '-'}",
        "",
    ]


def _as_of(context: Context):
    """The run's as-of moment (`planning.as_of`), or None when the context has no run."""
    dag_run = context.get("dag_run")
    run_after = getattr(dag_run, "run_after", None)
    if run_after is None and context.get("logical_date") is None:
        return None
    run_type = getattr(dag_run, "run_type", None)
    return as_of(context.get("data_interval_end"), context.get("logical_date"), run_after, run_type)


def _several(board: pd.DataFrame) -> bool:
    """Whether the run had several strategies (its rows are (pair, strategy): named with both)."""
    return "strategy" in board and board["strategy"].nunique() > 1


def _name(row: dict, several: bool) -> str:
    return f"{row['symbol']} {row['strategy']}" if several else row["symbol"]


def _failed_pairs(board: pd.DataFrame) -> list[str]:
    failed = board[board["best"] & (board["status"] != "ok")]
    what = "Failed (pair, strategy) rows" if _several(board) else "Failed pairs"
    if failed.empty:
        return [f"{what}: none"]
    lines = [f"- {_name(row, _several(board))}: {_clip(str(row['status']), 200)}" for row in failed.to_dict("records")]
    return [f"{what} ({len(failed)} of {int(board['best'].sum())}):", *_listed(lines)]


def _listed(lines: list[str]) -> list[str]:
    more = len(lines) - MAX_LISTED
    return lines[:MAX_LISTED] + ([f"... and {more} more"] if more > 0 else [])


def _format(value: Any, metric: str) -> str:
    return "n/a" if pd.isna(value) else f"{value:.2f}" if metric in RATIO_METRICS else f"{value:.2%}"


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def has_task_api() -> bool:
    """Whether a `ti` can reach the task API here (worker, dag-processor; not dag.test's callbacks)."""
    from airflow.sdk.execution_time import task_runner

    return getattr(task_runner, "SUPERVISOR_COMMS", None) is not None


def failed_tasks(context: Context) -> list[tuple[str, str | None]]:
    """(label, error text or None) of the run's failed task instances, in the DAG's task order."""
    ti, dag = context.get("ti"), context.get("dag")
    if ti is None or not has_task_api():  # the task instance the run's failure is attributed to
        return [(_label(ti.task_id, ti.map_index), None)] if ti else []
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
    failed = [key for key, state in task_states(states, dag.task_dict).items() if state == "failed"]
    order = {task_id: position for position, task_id in enumerate(dag.task_dict)}
    failed.sort(key=lambda item: (order.get(item[0], len(order)), item))
    return [(_label(t, i), ti.xcom_pull(task_ids=t, key=ERROR_KEY, map_indexes=i)) for t, i in failed]


def run_results(context: Context, data_url: str) -> tuple[pd.DataFrame | None, dict | None, str | None]:
    """The run's leaderboard, cost summary and report URL (None when rank did not write them)."""
    ti, end = context.get("ti"), _as_of(context)
    if ti is None or end is None:
        return None, None, None
    if has_task_api():
        url = (ti.xcom_pull(task_ids="plan") or {}).get("results_url")
    else:
        url = layout.results_url(data_url, end, ti.run_id, ti.dag_id)
    folder = resolve(url) if url else None
    parquet = read_bytes(folder.join(layout.LEADERBOARD_PARQUET)) if folder else None
    if not parquet:
        return None, None, None
    summary = read_bytes(folder.join(layout.SUMMARY_JSON))
    cost = json.loads(summary)["cost"] if summary else None
    return pd.read_parquet(io.BytesIO(parquet)), cost, folder.join(layout.REPORT_HTML).url  # rank writes it too


def send(subject: str, body: str, context: Context, settings: Settings) -> None:
    """Publish to the SNS topic when one is configured, else log one line."""
    topic = settings.notify_sns_topic_arn
    if not topic:
        log.info("%s | %s", subject, " | ".join(line.strip() for line in body.splitlines() if line.strip()))
        return
    from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

    # SnsNotifier renders its fields as Jinja, in place: one per message, texts as variables (braces stay text).
    region = topic.split(":")[3] if topic.count(":") >= 5 else None  # arn:aws:sns:<region>:<account>:<name>
    texts = {"subject": "{{ alert_subject }}", "message": "{{ alert_body }}"}
    notifier = SnsNotifier(aws_conn_id=settings.aws_conn_id, target_arn=topic, region_name=region, **texts)
    subject = _clip(subject, 100).encode("ascii", "replace").decode()  # SNS: ASCII, one line, <= 100
    context = {**context, "alert_subject": subject, "alert_body": body}
    if not hasattr(context.get("dag"), "get_template_env"):  # dag.test() passes a SerializedDAG: airflow#64649
        context.pop("dag", None)
    notifier(context)
