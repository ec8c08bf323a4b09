"""The `plan` step: validate a run's params and render every job, with no Airflow import.

Mapped values are not Jinja-rendered, so each job's name, command, environment and size are
rendered here, complete. The command is the container's (its ENTRYPOINT is `python -m backtest`);
the local runner prepends that entrypoint and runs exactly the same arguments.

Pairs are grouped into chunks, one job per chunk (`pairs_per_job`; 0 = as many pairs per job as
keeps a run at `MAX_JOBS` jobs). The arithmetic for 1,000 pairs: 25 pairs a job, 40 Batch jobs,
so 40 refresh + 40 backtest + plan + rank = 82 task instances (Airflow's `max_map_length` is
1,024) and 40 SubmitJob calls a run (Batch allows 50 a second), each job paying one Fargate
start-up instead of 25.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from backtest.errors import InputError
from backtest.job import SELECT_METRICS
from backtest.params import SYMBOL_PATTERN, format_time, parse_fee_bps, parse_windows
from backtest_airflow import layout

# What a leaderboard can rank by: what a sweep can select by, and buy-and-hold (same for every window).
RANK_METRICS = (*SELECT_METRICS, "buy_hold_return")
RANK_ON = ("in_sample", "out_of_sample")
MAX_LOOKBACK_DAYS = 3650
MAX_JOBS = 40
MAX_PAIRS = 5000
# The trigger form's params, in form order (the DAG declares each one; unknown keys are refused).
PARAM_KEYS = (
    "pairs",
    "window",
    "fee_bps",
    "lookback_days",
    "rank_by",
    "allow_failed_pairs",
    "holdout_days",
    "rank_on",
    "pairs_per_job",
)


@dataclass(frozen=True)
class RunPlan:
    """A validated run: what every later task needs, as plain JSON-able values."""

    pairs: list[str]
    chunks: list[list[str]]  # pairs per job (each chunk runs once per strategy)
    strategies: list[dict]  # [{"name": str, "params": {param: values text}}], each name once
    window: str  # as given: one window, a list or a range
    windows: list[str]
    max_window_bars: int
    fee_bps: float
    lookback_days: int
    holdout_days: int
    rank_by: str
    rank_on: str
    allow_failed_pairs: bool
    start: str  # ISO, inclusive
    end: str  # ISO, exclusive: the run's as-of moment (point-in-time), see `as_of`
    results_url: str
    history_days: int  # candle history the refresh must keep for this run (window + warm-up)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunPlan:
        """The plan again from its XCom form (`dataclasses.asdict`); unknown or missing keys fail loudly."""
        return cls(**values)

    @property
    def metric(self) -> str:
        """The leaderboard's ranking column: `rank_by`, on the out-of-sample figures when ranked on them."""
        return f"oos_{self.rank_by}" if self.rank_on == "out_of_sample" else self.rank_by


def _whole(value, name: str, low: int, high: int, problems: list[str]) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        problems.append(f"invalid {name} {value!r}: must be a whole number from {low} to {high}")
        return low
    return value


def as_of(data_interval_end: datetime | None, logical_date: datetime | None, run_after: datetime) -> datetime:
    """The moment a run is "as of": its backtest window ends there and it sees only candles closed by then.

    The data interval's end when the run has one (scheduled and backfill runs of `@daily`: D 00:00),
    else its logical date, else (a trigger with no logical date) the time it was queued to run;
    always aligned down to the hour, so a window never ends inside a candle.
    """
    moment = data_interval_end or logical_date or run_after
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def make_plan(params: dict[str, Any], data_url: str, dag_id: str, run_id: str, end: datetime) -> RunPlan:
    """Check a run's params (every problem in one InputError) and fix its window and folder.

    `end` is the run's as-of moment (`as_of`); the results folder is `date=<its date>`.
    """
    problems: list[str] = []
    unknown = sorted(set(params) - set(PARAM_KEYS))
    if unknown:
        problems.append(f"unknown param(s) {', '.join(map(repr, unknown))}: known are {', '.join(PARAM_KEYS)}")
    pairs = params.get("pairs") or []
    if not isinstance(pairs, list) or not pairs:
        problems.append("pairs must be a non-empty list of symbols")
        pairs = []
    bad = [p for p in pairs if not isinstance(p, str) or not re.fullmatch(SYMBOL_PATTERN, p)]
    if bad:
        problems.append(f"invalid symbol(s) {', '.join(map(repr, bad))}: each must match {SYMBOL_PATTERN}")
    if len(set(pairs)) != len(pairs):
        problems.append("pairs contains duplicates")
    if len(pairs) > MAX_PAIRS:
        problems.append(f"too many pairs ({len(pairs)}): at most {MAX_PAIRS} a run")
    window = params.get("window", "15d")
    window = ",".join(map(str, window)) if isinstance(window, list) else str(window)
    windows: list[tuple[str, int]] = [("15d", 360)]
    try:
        windows = parse_windows(window)
    except InputError as exc:
        problems.append(str(exc))
    fee = 0.0
    try:
        fee = parse_fee_bps(params.get("fee_bps", 10))
    except InputError as exc:
        problems.append(str(exc))
    lookback = _whole(params.get("lookback_days", 365), "lookback_days", 1, MAX_LOOKBACK_DAYS, problems)
    holdout = _whole(params.get("holdout_days", 0), "holdout_days", 0, MAX_LOOKBACK_DAYS, problems)
    if holdout and holdout >= lookback:
        problems.append(f"holdout_days ({holdout}) must be shorter than lookback_days ({lookback})")
    per_job = _whole(params.get("pairs_per_job", 0), "pairs_per_job", 0, MAX_PAIRS, problems)
    rank_by = params.get("rank_by", "total_return")
    if rank_by not in RANK_METRICS:
        problems.append(f"invalid rank_by {rank_by!r}: one of {', '.join(RANK_METRICS)}")
    rank_on = params.get("rank_on", "in_sample")
    if rank_on not in RANK_ON:
        problems.append(f"invalid rank_on {rank_on!r}: one of {', '.join(RANK_ON)}")
    elif rank_on == "out_of_sample" and not holdout:
        problems.append("rank_on out_of_sample needs holdout_days > 0")
    if problems:
        raise InputError("; ".join(problems))

    per_job = per_job or math.ceil(len(pairs) / MAX_JOBS)
    max_bars = max(bars for _, bars in windows)
    start = end - timedelta(days=lookback)
    results_url = layout.results_url(data_url, end, run_id, dag_id)
    return RunPlan(
        pairs=list(pairs),
        chunks=[pairs[i : i + per_job] for i in range(0, len(pairs), per_job)],
        strategies=[{"name": "sma_trend", "params": {"window": window}}],
        window=window,
        windows=[label for label, _ in windows],
        max_window_bars=max_bars,
        fee_bps=fee,
        lookback_days=lookback,
        holdout_days=holdout,
        rank_by=rank_by,
        rank_on=rank_on,
        allow_failed_pairs=bool(params.get("allow_failed_pairs")),
        start=_iso(start),
        end=_iso(end),
        results_url=results_url,
        history_days=lookback + math.ceil(max_bars / 24) + 1,
    )


def job_command(plan: RunPlan, symbols: list[str], data_url: str) -> list[str]:
    """The container command (after the `python -m backtest` entrypoint) for one chunk of pairs."""
    command = ["run", "--symbol", ",".join(symbols), "--data-url", data_url, "--start", plan.start, "--end", plan.end]
    command += ["--window", plan.window, "--fee-bps", repr(float(plan.fee_bps)).removesuffix(".0")]  # every digit
    if plan.holdout_days or len(plan.windows) > 1:
        select_by = plan.rank_by if plan.rank_by in SELECT_METRICS else "total_return"
        command += ["--holdout-days", str(plan.holdout_days), "--select-by", select_by]
    return [*command, "--results-url", plan.results_url]


def job_name(symbols: list[str], end: datetime, run_id: str) -> str:
    """An AWS Batch job name (<= 128 of [A-Za-z0-9_-], alphanumeric first), unique per run."""
    digest = hashlib.sha256(f"{run_id}:{','.join(symbols)}".encode()).hexdigest()[:8]
    more = f"-plus{len(symbols) - 1}" if len(symbols) > 1 else ""
    return f"backtest-{symbols[0]}{more}-{end:%Y%m%d}-{digest}"


def job_kwargs(plan: RunPlan, data_url: str, run_id: str, vcpu: float = 1.0, memory_mib: int = 2048) -> list[dict]:
    """Per chunk, the kwargs `BatchOperator.expand_kwargs` (and our local runner) take."""
    end = datetime.fromisoformat(plan.end)
    jobs = []
    for symbols in plan.chunks:
        name = job_name(symbols, end, run_id)
        environment = {
            "BACKTEST_RUN_ID": run_id,
            "BACKTEST_JOB_NAME": name,
            "BACKTEST_JOB_VCPU": f"{vcpu:g}",
            "BACKTEST_JOB_MEMORY_MIB": str(memory_mib),
        }
        jobs.append(
            {
                "job_name": name,
                "container_overrides": {
                    "command": job_command(plan, symbols, data_url),
                    "environment": [{"name": k, "value": v} for k, v in environment.items()],
                    "resourceRequirements": [
                        {"type": "VCPU", "value": f"{vcpu:g}"},
                        {"type": "MEMORY", "value": str(memory_mib)},
                    ],
                },
                "tags": {"pairs": pairs_label(symbols)},
            }
        )
    return jobs


def pairs_label(symbols: list[str]) -> str:
    """How a chunk of pairs shows in the UI: `BTCUSDT`, or `BTCUSDT +24`."""
    return symbols[0] if len(symbols) == 1 else f"{symbols[0]} +{len(symbols) - 1}"


def job_pairs(job: dict) -> list[str]:
    """The pairs a rendered job backtests (from its command)."""
    command = job["container_overrides"]["command"]
    return command[command.index("--symbol") + 1].split(",")


def _iso(moment: datetime) -> str:
    return format_time(moment)
