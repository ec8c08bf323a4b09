"""The `plan` step: a run's params checked into a `RunPlan`, its window and folder fixed. No Airflow import.

A run backtests one or more strategies (`strategies`: each a name and its parameters' values, a
grid when some parameter has several; checked by `run_strategies`), each on every pair. Pairs are
grouped into chunks; there is one refresh task per chunk and one job per (chunk, strategy)
(rendered by `jobs`), which writes its results into the strategy's folder of the run
(`layout.strategy_results_url`). `pairs_per_job` (0 = automatic) sizes the chunks so that chunks
x strategies stays at most `MAX_JOBS`: for 1,000 pairs and one strategy, 25 pairs a job and 40
Batch jobs, so 40 refresh + 40 backtest + plan + chunks + jobs + candles + rank = 85 task
instances (Airflow's `max_map_length` is 1,024) and 40 SubmitJob calls a run (Batch allows 50 a
second), each job paying one Fargate start-up instead of 25; with three strategies, 13 chunks of
77 pairs and 39 jobs.

The walk-forward's rule (`TRAIN:TEST[:anchored]`) is `backtest.simulation.walkforward`'s, the
strategies' are `backtest.strategy`'s: `make_plan` asks them and reports every problem in one message.
With `walk_forward` set, every job runs the walk-forward (`--walk-forward`, choosing by
`--select-by` in each fold) and the run ranks on its stitched out-of-sample figures: `rank_on` is
`out_of_sample` whatever the param says (the test windows are the run's out-of-sample part).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from backtest.errors import InputError
from backtest.params import SYMBOL_PATTERN, format_time, parse_fee_bps, window_label
from backtest.simulation.execution import parse_bps
from backtest.simulation.metrics import SELECT_METRICS
from backtest.simulation.walkforward import parse_walk_forward
from backtest_airflow import layout
from backtest_airflow.run_strategies import DEFAULT_WINDOW, check_strategies, values_text

# What a leaderboard can rank by: what a sweep can select by, and buy-and-hold (same for every window).
RANK_METRICS = (*SELECT_METRICS, "buy_hold_return")
RANK_ON = ("in_sample", "out_of_sample")
MAX_LOOKBACK_DAYS = 3650
MAX_JOBS = 40
MAX_PAIRS = 5000
MAX_PORTFOLIO_TOP = 1000
# The trigger form's params, in form order (the DAG declares each one; unknown keys are refused).
PARAM_KEYS = (
    "pairs",
    "strategies",
    "window",
    "fee_bps",
    "slippage_bps",
    "lookback_days",
    "rank_by",
    "allow_failed_pairs",
    "holdout_days",
    "walk_forward",
    "rank_on",
    "portfolio_top",
    "pairs_per_job",
)


@dataclass(frozen=True)
class RunPlan:
    """A validated run: what every later task needs, as plain JSON-able values."""

    pairs: list[str]
    chunks: list[list[str]]  # pairs per job (each chunk runs once per strategy)
    # [{"name", "label", "params": {param: values text}, "execution": {option: value text}}], each label once
    strategies: list[dict]
    window: str  # the `window` param as given (sma_trend's window when `strategies` gives none)
    warmup_bars: int  # the most candles any strategy of the run reads before the window
    fee_bps: float
    slippage_bps: float  # run-wide, as fee_bps (docs/execution.md)
    lookback_days: int
    holdout_days: int
    walk_forward: str  # "" (off), or TRAIN:TEST[:anchored] as the jobs' --walk-forward takes it (e.g. 60d:20d)
    rank_by: str
    rank_on: str
    portfolio_top: int  # pairs the portfolio's selection test picks on in-sample figures (report.portfolio)
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
        return ranking_column(self.rank_by, self.rank_on, self.walk_forward)


def ranking_column(rank_by: str, rank_on: str | None, walk_forward: str | None = None) -> str:
    """The leaderboard column a run ranks by: `oos_<rank_by>` when it ranks on out-of-sample figures
    (`rank_on` out_of_sample, or any walk-forward: its stitched test windows), else `rank_by`.
    From a plan's fields or a run's params as given (where rank_on may still say in_sample)."""
    return f"oos_{rank_by}" if rank_on == "out_of_sample" or walk_forward else rank_by


def _whole(value, name: str, low: int, high: int, problems: list[str]) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        problems.append(f"invalid {name} {value!r}: must be a whole number from {low} to {high}")
        return low
    return value


# Runs someone asked for (the UI, REST, `airflow dags trigger`, TriggerDagRunOperator): a logical
# date they give is the moment they asked about.
TRIGGERED_RUN_TYPES = frozenset({"manual", "operator_triggered"})


def as_of(
    data_interval_end: datetime | None, logical_date: datetime | None, run_after: datetime, run_type: str | None = None
) -> datetime:
    """The moment a run is "as of": its backtest window ends there and it sees only candles closed by then.

    A triggered run's logical date when it has one: Airflow gives it the data interval of that date
    through REST but that of the moment it was queued through `airflow dags trigger --logical-date`
    (`trigger_dag` infers it from `run_after`), and the date is what both asked for. Else the data
    interval's end (scheduled and backfill runs of `@daily`: D 00:00; with cron data intervals, the
    interval's end), else the logical date, else (a trigger with no logical date) the time it was
    queued to run; always aligned down to the hour, so a window never ends inside a candle.
    """
    kind = getattr(run_type, "value", run_type)  # Airflow's DagRunType, or its value
    asked = logical_date if kind in TRIGGERED_RUN_TYPES else None
    moment = asked or data_interval_end or logical_date or run_after
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
    window = values_text(params.get("window", DEFAULT_WINDOW))
    fee = slippage = 0.0
    try:
        fee = parse_fee_bps(params.get("fee_bps", 10))
    except InputError as exc:
        problems.append(str(exc))
    try:
        slippage = parse_bps(_number_text(params.get("slippage_bps", 0)), "slippage-bps")
    except InputError as exc:
        problems.append(str(exc).replace("--slippage-bps", "slippage_bps"))
    strategies, grids = check_strategies(params.get("strategies"), window, problems, slippage)
    known = len(problems)
    lookback = _whole(params.get("lookback_days", 365), "lookback_days", 1, MAX_LOOKBACK_DAYS, problems)
    lookback_valid = len(problems) == known
    holdout = _whole(params.get("holdout_days", 0), "holdout_days", 0, MAX_LOOKBACK_DAYS, problems)
    if holdout and holdout >= lookback:
        problems.append(f"holdout_days ({holdout}) must be shorter than lookback_days ({lookback})")
    per_job = _whole(params.get("pairs_per_job", 0), "pairs_per_job", 0, MAX_PAIRS, problems)
    top = _whole(params.get("portfolio_top", 5), "portfolio_top", 1, MAX_PORTFOLIO_TOP, problems)
    rank_by = params.get("rank_by", "total_return")
    if rank_by not in RANK_METRICS:
        problems.append(f"invalid rank_by {rank_by!r}: one of {', '.join(RANK_METRICS)}")
    walk_forward = _walk_forward(params.get("walk_forward"), lookback if lookback_valid else None, holdout, problems)
    rank_on = params.get("rank_on", "in_sample")
    if rank_on not in RANK_ON:
        problems.append(f"invalid rank_on {rank_on!r}: one of {', '.join(RANK_ON)}")
    elif rank_on == "out_of_sample" and not holdout and walk_forward is None:
        problems.append("rank_on out_of_sample needs holdout_days > 0 or a walk_forward")
    if problems:
        raise InputError("; ".join(problems))

    # chunks x strategies jobs: at most MAX_JOBS (or one chunk, when the strategies alone are more)
    per_job = per_job or math.ceil(len(pairs) / max(1, MAX_JOBS // len(strategies)))
    warmup = max(grid.warmup_bars() for grid in grids)
    start = end - timedelta(days=lookback)
    results_url = layout.results_url(data_url, end, run_id, dag_id)
    return RunPlan(
        pairs=list(pairs),
        chunks=[pairs[i : i + per_job] for i in range(0, len(pairs), per_job)],
        strategies=strategies,
        window=window,
        warmup_bars=warmup,
        fee_bps=fee,
        slippage_bps=slippage,
        lookback_days=lookback,
        holdout_days=holdout,
        walk_forward=walk_forward or "",
        rank_by=rank_by,
        rank_on="out_of_sample" if walk_forward else rank_on,  # the stitched test windows: see the module docstring
        portfolio_top=top,
        allow_failed_pairs=bool(params.get("allow_failed_pairs")),
        start=format_time(start),
        end=format_time(end),
        results_url=results_url,
        history_days=lookback + math.ceil(warmup / 24) + 1,
    )


def _number_text(value: Any) -> str | None:
    """A number param as the job's option text (a bool is no number)."""
    return None if isinstance(value, bool) or not isinstance(value, int | float | str) else str(value)


def _walk_forward(value: Any, lookback_days: int | None, holdout_days: int, problems: list[str]) -> str | None:
    """The `walk_forward` param as the job's --walk-forward takes it (`backtest.simulation.walkforward`'s own parser
    and spelling, e.g. `60d:20d`), or None when it is off (empty); problems go to `problems`.

    The run's window is `lookback_days` long (None: not a valid number, said elsewhere), so it has a
    fold only when it is longer than the training window (the first test window starts TRAIN after
    the window's start): checked here, once, rather than failing in every job."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        problems.append(f"walk_forward must be text such as 180d:30d or 180d:30d:anchored, not {value!r}")
        return None
    try:
        walk = parse_walk_forward(value)
    except InputError as exc:
        problems.append(str(exc))
        return None
    if holdout_days:
        problems.append(
            f"holdout_days ({holdout_days}) and walk_forward ({walk.text}) are both given: give one "
            "(the walk-forward's test windows are its out-of-sample part)"
        )
    if lookback_days is not None and lookback_days * 24 <= walk.train_bars:
        problems.append(
            f"lookback_days ({lookback_days}) is too short for walk_forward {walk.text}: the backtest window must "
            f"be longer than its {window_label(walk.train_bars)} training window to leave a test window"
        )
    return walk.text
