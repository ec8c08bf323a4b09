"""The `plan` step: validate a run's params and render every pair's job, with no Airflow import.

Mapped values are not Jinja-rendered, so each job's name, command and environment are rendered
here, complete. The command is the container's (its ENTRYPOINT is `python -m backtest`); the
local runner prepends that entrypoint and runs exactly the same arguments.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from backtest.errors import InputError
from backtest.params import SYMBOL_PATTERN, parse_fee_bps, parse_window, validate_symbol

RANK_METRICS = ("total_return", "sharpe", "sortino", "calmar", "cagr", "max_drawdown", "win_rate", "buy_hold_return")
# Metrics where smaller is better; everything else ranks descending.
ASCENDING_METRICS = ("max_drawdown",)
MAX_LOOKBACK_DAYS = 3650


@dataclass(frozen=True)
class RunPlan:
    """A validated run: what every later task needs, as plain JSON-able values."""

    pairs: list[str]
    window: str
    window_bars: int
    fee_bps: float
    lookback_days: int
    rank_by: str
    allow_failed_pairs: bool
    start: str  # ISO, inclusive
    end: str  # ISO, exclusive: the data interval's end (point-in-time)
    results_url: str
    history_days: int  # candle history the refresh must keep for this run (window + warm-up)


def validate_params(params: dict) -> tuple[list[str], str, int, float, int, str, bool]:
    """Check a run's params; raise InputError with every problem in one line."""
    problems: list[str] = []
    pairs = params.get("pairs") or []
    if not isinstance(pairs, list) or not pairs:
        problems.append("pairs must be a non-empty list of symbols")
        pairs = []
    bad = [p for p in pairs if not isinstance(p, str) or not re.fullmatch(SYMBOL_PATTERN, p)]
    if bad:
        problems.append(f"invalid symbol(s) {', '.join(map(repr, bad))}: each must match {SYMBOL_PATTERN}")
    if len(set(pairs)) != len(pairs):
        problems.append("pairs contains duplicates")
    window_bars = fee = 0
    try:
        window_bars = parse_window(params.get("window", "15d"))
    except InputError as exc:
        problems.append(str(exc))
    try:
        fee = parse_fee_bps(params.get("fee_bps", 10))
    except InputError as exc:
        problems.append(str(exc))
    lookback = params.get("lookback_days", 365)
    if not isinstance(lookback, int) or isinstance(lookback, bool) or not 1 <= lookback <= MAX_LOOKBACK_DAYS:
        problems.append(
            f"invalid lookback_days {lookback!r}: must be a whole number of days from 1 to {MAX_LOOKBACK_DAYS}"
        )
    rank_by = params.get("rank_by", "total_return")
    if rank_by not in RANK_METRICS:
        problems.append(f"invalid rank_by {rank_by!r}: one of {', '.join(RANK_METRICS)}")
    if problems:
        raise InputError("; ".join(problems))
    for pair in pairs:
        validate_symbol(pair)
    return (
        pairs,
        str(params.get("window", "15d")),
        window_bars,
        fee,
        lookback,
        rank_by,
        bool(params.get("allow_failed_pairs")),
    )


def run_folder_name(run_id: str) -> str:
    """A storage-key-safe, deterministic folder name for a DAG run id."""
    return re.sub(r"[^A-Za-z0-9._=-]", "-", run_id)


def make_plan(
    params: dict, data_url: str, dag_id: str, run_id: str, interval_start: datetime, interval_end: datetime
) -> RunPlan:
    """Validate params and fix the run's window and results folder from its data interval."""
    pairs, window, window_bars, fee, lookback, rank_by, allow_failed = validate_params(params)
    end = interval_end
    start = end - timedelta(days=lookback)
    results_url = "/".join(
        [
            data_url.rstrip("/"),
            "results",
            dag_id,
            f"date={interval_start:%Y-%m-%d}",
            f"run={run_folder_name(run_id)}",
        ]
    )
    return RunPlan(
        pairs=pairs,
        window=window,
        window_bars=window_bars,
        fee_bps=fee,
        lookback_days=lookback,
        rank_by=rank_by,
        allow_failed_pairs=allow_failed,
        start=_iso(start),
        end=_iso(end),
        results_url=results_url,
        history_days=lookback + math.ceil(window_bars / 24) + 1,
    )


def job_command(plan: RunPlan, symbol: str, data_url: str) -> list[str]:
    """The container command (after the `python -m backtest` entrypoint) for one pair."""
    return [
        "run",
        "--symbol",
        symbol,
        "--data-url",
        data_url,
        "--start",
        plan.start,
        "--end",
        plan.end,
        "--window",
        plan.window,
        "--fee-bps",
        f"{plan.fee_bps:g}",
        "--results-url",
        plan.results_url,
    ]


def job_name(symbol: str, interval_start: datetime, run_id: str) -> str:
    """An AWS Batch job name (<= 128 of [A-Za-z0-9_-], alphanumeric first), unique per run."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"backtest-{symbol}-{interval_start:%Y%m%d}-{digest}"


def job_kwargs(plan: RunPlan, data_url: str, run_id: str, interval_start: datetime) -> list[dict]:
    """Per pair, the kwargs `BatchOperator.expand_kwargs` (and our local runner) take."""
    return [
        {
            "job_name": job_name(symbol, interval_start, run_id),
            "container_overrides": {
                "command": job_command(plan, symbol, data_url),
                "environment": [{"name": "BACKTEST_RUN_ID", "value": run_id}],
            },
            "tags": {"pair": symbol},
        }
        for symbol in plan.pairs
    ]


def job_pair(job: dict) -> str:
    """The pair a rendered job backtests."""
    return job["tags"]["pair"]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
