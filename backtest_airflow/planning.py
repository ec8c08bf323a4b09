"""The `plan` step: validate a run's params and render every job, with no Airflow import.

Mapped values are not Jinja-rendered, so each job's name, command, environment and size are
rendered here, complete. The command is the container's (its ENTRYPOINT is `python -m backtest`);
the local runner prepends that entrypoint and runs exactly the same arguments.

A run backtests one or more strategies (`strategies`: each a name and its parameters' values, a
grid when some parameter has several), each on every pair. Pairs are grouped into chunks; there
is one refresh task per chunk and one job per (chunk, strategy), which writes its results into
the strategy's folder of the run (`layout.strategy_results_url`). `pairs_per_job` (0 = automatic)
sizes the chunks so that chunks x strategies stays at most `MAX_JOBS`: for 1,000 pairs and one
strategy, 25 pairs a job and 40 Batch jobs, so 40 refresh + 40 backtest + plan + chunks + jobs +
candles + rank = 85 task instances (Airflow's `max_map_length` is 1,024) and 40 SubmitJob calls a
run (Batch allows 50 a second), each job paying one Fargate start-up instead of 25; with three
strategies, 13 chunks of 77 pairs and 39 jobs.

Every strategy parameter rule (names, bounds, durations, ranges, rejected combinations, grid
size) is `backtest.strategy`'s, and the walk-forward's (`TRAIN:TEST[:anchored]`) is
`backtest.simulation.walkforward`'s: `make_plan` asks them and reports every problem in one message.

With `walk_forward` set, every job runs the walk-forward (`--walk-forward`, choosing by
`--select-by` in each fold) and the run ranks on its stitched out-of-sample figures: `rank_on` is
`out_of_sample` whatever the param says (the test windows are the run's out-of-sample part).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from backtest import strategy
from backtest.errors import InputError
from backtest.params import SYMBOL_PATTERN, format_time, parse_fee_bps, window_label
from backtest.simulation.metrics import SELECT_METRICS
from backtest.simulation.walkforward import parse_walk_forward
from backtest.strategies.builtins import SmaTrend
from backtest_airflow import layout

# What a leaderboard can rank by: what a sweep can select by, and buy-and-hold (same for every window).
RANK_METRICS = (*SELECT_METRICS, "buy_hold_return")
RANK_ON = ("in_sample", "out_of_sample")
MAX_LOOKBACK_DAYS = 3650
MAX_JOBS = 40
MAX_PAIRS = 5000
WINDOW_STRATEGY = SmaTrend.name  # the strategy whose `window` the `window` param is (the default strategy)
DEFAULT_WINDOW = SmaTrend().param("window").default  # the `window` param's default: sma_trend's own
LOOKAHEAD_CUTS = 12  # truncation points of plan's quick look-ahead check (check-strategy: 60)
# The trigger form's params, in form order (the DAG declares each one; unknown keys are refused).
PARAM_KEYS = (
    "pairs",
    "strategies",
    "window",
    "fee_bps",
    "lookback_days",
    "rank_by",
    "allow_failed_pairs",
    "holdout_days",
    "walk_forward",
    "rank_on",
    "pairs_per_job",
)


@dataclass(frozen=True)
class RunPlan:
    """A validated run: what every later task needs, as plain JSON-able values."""

    pairs: list[str]
    chunks: list[list[str]]  # pairs per job (each chunk runs once per strategy)
    strategies: list[dict]  # [{"name": str, "params": {param: values text}}], each name once
    window: str  # the `window` param as given (sma_trend's window when `strategies` gives none)
    warmup_bars: int  # the most candles any strategy of the run reads before the window
    fee_bps: float
    lookback_days: int
    holdout_days: int
    walk_forward: str  # "" (off), or TRAIN:TEST[:anchored] as the jobs' --walk-forward takes it (e.g. 60d:20d)
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
    window = _values_text(params.get("window", DEFAULT_WINDOW))
    strategies, grids = _strategies(params.get("strategies"), window, problems)
    fee = 0.0
    try:
        fee = parse_fee_bps(params.get("fee_bps", 10))
    except InputError as exc:
        problems.append(str(exc))
    known = len(problems)
    lookback = _whole(params.get("lookback_days", 365), "lookback_days", 1, MAX_LOOKBACK_DAYS, problems)
    lookback_valid = len(problems) == known
    holdout = _whole(params.get("holdout_days", 0), "holdout_days", 0, MAX_LOOKBACK_DAYS, problems)
    if holdout and holdout >= lookback:
        problems.append(f"holdout_days ({holdout}) must be shorter than lookback_days ({lookback})")
    per_job = _whole(params.get("pairs_per_job", 0), "pairs_per_job", 0, MAX_PAIRS, problems)
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
        lookback_days=lookback,
        holdout_days=holdout,
        walk_forward=walk_forward or "",
        rank_by=rank_by,
        rank_on="out_of_sample" if walk_forward else rank_on,  # the stitched test windows: see the module docstring
        allow_failed_pairs=bool(params.get("allow_failed_pairs")),
        start=_iso(start),
        end=_iso(end),
        results_url=results_url,
        history_days=lookback + math.ceil(warmup / 24) + 1,
    )


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


def _values_text(value: Any) -> str | None:
    """A parameter's values as the job's command line takes them: `5d`, `5d,10d`, `1d:10d:1d`
    (a JSON number, or a list of values, is accepted too); None when it is none of these."""
    if isinstance(value, list):
        items = [_values_text(item) for item in value]
        if not items or None in items or (len(items) > 1 and any("," in i or ":" in i for i in items)):
            return None  # empty, or a list of lists or of ranges: not one comma list
        return ",".join(items)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return str(value).strip()


def _strategies(value: Any, window: str | None, problems: list[str]) -> tuple[list[dict], list[strategy.Grid]]:
    """The `strategies` param normalized ([{"name", "params": {param: values text}}]) with each one's
    grid, both made by `backtest.strategy` (so the job accepts them); problems go to `problems`.

    The `window` param is sma_trend's window: it fills it when `strategies` gives none; when it
    is not its default, `strategies` giving sma_trend a window too, or not listing sma_trend, is
    a problem (one of them would be silently ignored)."""
    if window is None:
        problems.append("window must be text (15d, 5d,10d or 1d:10d:1d) or a number of bars")
    if value is None:
        value = [{"name": WINDOW_STRATEGY, "params": {}}]
    if not isinstance(value, list) or not value:
        problems.append('strategies must be a non-empty list of {"name": ..., "params": {...}}')
        return [], []
    try:
        registered = strategy.names()
    except InputError as exc:  # a user's strategy module does not import: say which and why
        problems.append(str(exc))
        return [], []
    window_given = window is not None and window != DEFAULT_WINDOW
    normalized, grids, unknown, seen = [], [], [], set()
    for i, item in enumerate(value):
        if not isinstance(item, dict) or "name" not in item or set(item) - {"name", "params"}:
            problems.append(f'strategies[{i}] must be {{"name": ..., "params": {{...}}}}, not {item!r}')
            continue
        name, given = item["name"], item.get("params") or {}
        if not isinstance(name, str) or name not in registered:
            unknown.append(name)
            continue
        if name in seen:
            problems.append(f"strategy {name!r} is listed twice")
            continue
        seen.add(name)
        if not isinstance(given, dict):
            problems.append(f"{name} params must be an object {{param: values}}, not {given!r}")
            continue
        spec = _spec(strategy.get(name), given, problems)
        if name == WINDOW_STRATEGY and spec is not None:
            if "window" not in given and window is not None:
                spec = _spec(strategy.get(name), {**spec, "window": window}, problems, "window")
            elif "window" in given and window_given:
                problems.append(
                    f"window {window!r} and the window {given['window']!r} of {name} in strategies are both "
                    "given: give it once, in strategies"
                )
                spec = None
        if spec is None:
            continue
        try:
            grids.append(strategy.make_grid(strategy.get(name), spec))
        except InputError as exc:  # no valid combination, too many combinations
            problems.append(str(exc))
            continue
        normalized.append({"name": name, "params": spec})
    if unknown:
        problems.append(f"unknown strategy(s) {', '.join(map(repr, unknown))}: registered are {', '.join(registered)}")
    if window_given and WINDOW_STRATEGY not in seen:
        problems.append(f"window {window!r} is {WINDOW_STRATEGY}'s window, but strategies does not list it")
    return normalized, grids


def _spec(strategy_: strategy.Strategy, given: dict, problems: list[str], what: str = "") -> dict[str, str] | None:
    """{param: values text} of one strategy, each checked by its `Param`; None if any is a problem.
    `what` names where the values came from in the messages (default: `<strategy> <param>`)."""
    spec: dict[str, str] = {}
    for key, values in given.items():
        try:
            param = strategy_.param(str(key))  # unknown parameter
        except InputError as exc:
            problems.append(str(exc))
            continue
        text = _values_text(values)
        try:
            if text is None:
                raise InputError(f"values must be text, a number or a list of them, not {values!r}")
            param.parse_values(text)
        except InputError as exc:
            problems.append(f"{what or f'{strategy_.name} {key}'}: {exc}")
            continue
        spec[param.name] = text
    return spec if len(spec) == len(given) else None


def grid_of(entry: dict) -> strategy.Grid:
    """The grid of one of a plan's strategies (`RunPlan.strategies` item)."""
    return strategy.grid_of(entry["name"], entry["params"])


def lookahead_problems(plan: RunPlan) -> list[str]:
    """Run the quick look-ahead check (`backtest.strategies.lookahead`, on synthetic candles) for every strategy
    of the run: what fails it, one line each (an empty list: every one passed)."""
    from backtest.strategies import lookahead

    problems = []
    for entry in plan.strategies:
        try:
            report = lookahead.check_grid(grid_of(entry), cuts=LOOKAHEAD_CUTS)
        except Exception as exc:  # a user's strategy that raises is refused too, with what it raised
            problems.append(f"{entry['name']}: the check could not run: {type(exc).__name__}: {exc}")
            continue
        if not report["ok"]:
            problems.append(report["problem"])
    return problems


def job_command(plan: RunPlan, symbols: list[str], entry: dict, data_url: str, is_grid: bool) -> list[str]:
    """The container command (after the `python -m backtest` entrypoint) for one chunk of pairs and
    one strategy (`entry`, an item of `plan.strategies`; `is_grid`: it has several combinations)."""
    command = ["run", "--symbol", ",".join(symbols), "--data-url", data_url, "--start", plan.start, "--end", plan.end]
    command += ["--strategy", entry["name"]]
    for key, values in entry["params"].items():
        command += ["--param", f"{key}={values}"]
    command += ["--fee-bps", repr(float(plan.fee_bps)).removesuffix(".0")]  # every digit
    select_by = plan.rank_by if plan.rank_by in SELECT_METRICS else "total_return"
    if plan.walk_forward:  # every strategy, a grid or not: each fold chooses (among one, then) and trades
        command += ["--walk-forward", plan.walk_forward, "--select-by", select_by]
    elif plan.holdout_days or is_grid:
        command += ["--holdout-days", str(plan.holdout_days), "--select-by", select_by]
    return [*command, "--results-url", layout.strategy_results_url(plan.results_url, entry["name"])]


def job_name(symbols: list[str], strategy_name: str, end: datetime, run_id: str) -> str:
    """An AWS Batch job name (<= 128 of [A-Za-z0-9_-], alphanumeric first), unique per run, naming
    the chunk's first pair and the strategy."""
    digest = hashlib.sha256(f"{run_id}:{strategy_name}:{','.join(symbols)}".encode()).hexdigest()[:8]
    more = f"-plus{len(symbols) - 1}" if len(symbols) > 1 else ""
    label = re.sub(r"[^A-Za-z0-9_]", "-", strategy_name)[:40]  # identifiers may have non-ASCII letters
    return f"backtest-{symbols[0]}{more}-{label}-{end:%Y%m%d}-{digest}"


def _jobs(plan: RunPlan) -> Iterator[tuple[list[str], dict]]:
    """(pairs, strategy) of each job, in job (map index) order: chunk by chunk, each chunk's strategies."""
    for symbols in plan.chunks:
        for entry in plan.strategies:
            yield symbols, entry


def job_units(plan: RunPlan) -> list[list[tuple[str, str]]]:
    """Each job's (pair, strategy name) pairs, in job (map index) order."""
    return [[(symbol, entry["name"]) for symbol in symbols] for symbols, entry in _jobs(plan)]


def chunk_kwargs(plan: RunPlan) -> list[dict]:
    """Per chunk of pairs, what a refresh task maps over: its pairs and their label."""
    return [{"symbols": symbols, "pairs": pairs_label(symbols)} for symbols in plan.chunks]


def job_kwargs(plan: RunPlan, data_url: str, run_id: str, vcpu: float = 1.0, memory_mib: int = 2048) -> list[dict]:
    """Per (chunk, strategy), the kwargs `BatchOperator.expand_kwargs` (and our local runner) take."""
    end = datetime.fromisoformat(plan.end)
    is_grid = {entry["name"]: grid_of(entry).is_grid for entry in plan.strategies}
    jobs = []
    for symbols, entry in _jobs(plan):
        name = job_name(symbols, entry["name"], end, run_id)
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
                    "command": job_command(plan, symbols, entry, data_url, is_grid[entry["name"]]),
                    "environment": [{"name": k, "value": v} for k, v in environment.items()],
                    "resourceRequirements": [
                        {"type": "VCPU", "value": f"{vcpu:g}"},
                        {"type": "MEMORY", "value": str(memory_mib)},
                    ],
                },
                "tags": {"pairs": pairs_label(symbols), "strategy": entry["name"]},
            }
        )
    return jobs


def pairs_label(symbols: list[str]) -> str:
    """How a chunk of pairs shows in the UI: `BTCUSDT`, or `BTCUSDT +24`."""
    return symbols[0] if len(symbols) == 1 else f"{symbols[0]} +{len(symbols) - 1}"


def job_pairs(job: dict) -> list[tuple[str, str]]:
    """The (pair, strategy name) pairs a rendered job backtests (from its command)."""
    command = job["container_overrides"]["command"]
    name = command[command.index("--strategy") + 1]
    return [(symbol, name) for symbol in command[command.index("--symbol") + 1].split(",")]


def _iso(moment: datetime) -> str:
    return format_time(moment)
