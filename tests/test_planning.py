"""Planning a run: params checked (backtest_airflow/planning.py), strategies and their grids included
(run_strategies.py), pairs in chunks, one job per chunk and strategy and its container command
(jobs.py), the quick look-ahead check, and the moment a run is as of."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from backtest import strategy
from backtest.errors import InputError
from backtest.strategy import MAX_COMBINATIONS
from backtest_airflow import tasks
from backtest_airflow.jobs import job_kwargs, job_pairs, job_units
from backtest_airflow.planning import MAX_JOBS, as_of, make_plan
from backtest_airflow.run_strategies import lookahead_problems
from tests.support.strategies import PEEK_NEXT, RANGE_POSITION, drop

LOGICAL_DATE = datetime.fromisoformat("2026-10-01T00:00:00+00:00")
BATCH_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
THREE = [
    {"name": "sma_trend", "params": {"window": "5d"}},
    {"name": "sma_cross", "params": {"fast": "1d,2d", "slow": "5d:10d:5d"}},
    {"name": "rsi_reversion", "params": {}},
]


def plan_of(**params):
    return make_plan({"pairs": ["BTCUSDT"], **params}, "/store", "dag", "run", LOGICAL_DATE)


def problems_of(**params) -> str:
    with pytest.raises(InputError) as caught:
        plan_of(**params)
    message = str(caught.value)
    assert "\n" not in message  # one line
    return message


def test_thousand_pairs_make_few_jobs():
    from airflow.configuration import conf

    pairs = [f"P{i:04d}USDT" for i in range(1000)]
    plan = make_plan({"pairs": pairs}, "s3://b/d", "dag", "scheduled__x", LOGICAL_DATE)
    assert len(plan.chunks) == MAX_JOBS == 40 and {len(c) for c in plan.chunks} == {25}
    jobs = job_kwargs(plan, "s3://b/d", "scheduled__x")
    assert len({job["job_name"] for job in jobs}) == 40 and max(len(job["job_name"]) for job in jobs) <= 128
    assert [pair for job in jobs for pair, _ in job_pairs(job)] == pairs
    assert jobs[0]["tags"] == {"pairs": "P0000USDT +24", "strategy": "sma_trend"}
    assert len(jobs) <= conf.getint("core", "max_map_length")  # refresh and backtest: one instance a job
    small = make_plan({"pairs": pairs[:10]}, "s3://b/d", "dag", "r", LOGICAL_DATE)
    assert small.chunks == [[p] for p in pairs[:10]]
    chosen = make_plan({"pairs": pairs[:10], "pairs_per_job": 4}, "s3://b/d", "dag", "r", LOGICAL_DATE)
    assert [len(c) for c in chosen.chunks] == [4, 4, 2]


def test_plan_rejects_inconsistent_sweep_params():
    with pytest.raises(InputError, match="needs holdout_days"):
        make_plan({"pairs": ["BTCUSDT"], "rank_on": "out_of_sample"}, "/s", "d", "r", LOGICAL_DATE)
    with pytest.raises(InputError, match="must be shorter than lookback_days"):
        make_plan({"pairs": ["BTCUSDT"], "holdout_days": 30, "lookback_days": 30}, "/s", "d", "r", LOGICAL_DATE)


def test_plan_renders_the_container_command():
    end = datetime.fromisoformat("2026-10-02T00:00:00+00:00")
    plan = make_plan(
        {"pairs": ["BTCUSDT"], "window": "15d", "fee_bps": 10, "lookback_days": 90},
        "s3://bucket/data",
        "crypto_backtest_daily",
        "scheduled__2026-10-02T00:00:00+00:00",
        end,
    )
    assert plan.results_url == (
        "s3://bucket/data/results/crypto_backtest_daily/date=2026-10-02/run=scheduled__2026-10-02T00-00-00-00-00"
    )
    assert plan.history_days == 90 + 15 + 1
    (job,) = job_kwargs(plan, "s3://bucket/data", "scheduled__2026-10-02T00:00:00+00:00")
    assert job["container_overrides"]["command"] == [
        "run",
        "--symbol",
        "BTCUSDT",
        "--data-url",
        "s3://bucket/data",
        "--start",
        "2026-07-04T00:00:00Z",
        "--end",
        "2026-10-02T00:00:00Z",
        "--strategy",
        "sma_trend",
        "--param",
        "window=15d",
        "--fee-bps",
        "10",
        "--results-url",
        plan.results_url + "/strategy=sma_trend",
    ]
    assert job["job_name"].startswith("backtest-BTCUSDT-sma_trend-20261002-") and len(job["job_name"]) <= 128


@pytest.mark.parametrize(
    "interval_end, logical_date, run_after, run_type, expected",
    [
        # scheduled or backfill run of D (@daily: a zero-length interval at D 00:00)
        ("2026-10-02T00:00:00+00:00", "2026-10-02T00:00:00+00:00", "2026-10-02T00:00:00+00:00", "scheduled",
         "2026-10-02T00:00:00"),
        ("2026-10-02T00:00:00+00:00", "2026-10-02T00:00:00+00:00", "2026-12-03T12:36:18+00:00", "backfill",
         "2026-10-02T00:00:00"),
        # cron data intervals: the run of [D-1, D) has logical date D-1 and is as of D
        ("2026-10-02T00:00:00+00:00", "2026-10-01T00:00:00+00:00", "2026-10-02T00:00:00+00:00", "scheduled",
         "2026-10-02T00:00:00"),
        # a trigger at 20:58 with that logical date: the candle opened at 20:00 has not closed
        (None, "2026-10-02T20:58:31+00:00", "2026-10-02T20:58:31+00:00", "manual", "2026-10-02T20:00:00"),
        # `airflow dags trigger --logical-date T`: Airflow gives it the interval of the moment it was queued
        ("2026-12-03T12:36:18+00:00", "2026-11-01T00:00:00+00:00", "2026-12-03T12:36:18+00:00", "manual",
         "2026-11-01T00:00:00"),
        ("2026-12-03T12:36:18+00:00", "2026-11-01T00:00:00+00:00", "2026-12-03T12:36:18+00:00", "operator_triggered",
         "2026-11-01T00:00:00"),
        # a trigger with no logical date (`airflow dags trigger`, REST `"logical_date": null`)
        (None, None, "2026-10-02T07:59:59.999+00:00", "manual", "2026-10-02T07:00:00"),
        ("2026-10-02T07:59:59.999+00:00", None, "2026-10-02T07:59:59.999+00:00", "manual", "2026-10-02T07:00:00"),
        # another time zone: the same instant, in UTC
        (None, "2026-10-02T09:30:00+02:00", "2026-10-02T09:30:00+02:00", "manual", "2026-10-02T07:00:00"),
    ],
)  # fmt: skip
def test_a_runs_as_of_moment_is_its_interval_end_logical_date_or_run_after_down_to_the_hour(
    interval_end, logical_date, run_after, run_type, expected
):
    parse = lambda text: text and datetime.fromisoformat(text)  # noqa: E731
    moment = as_of(parse(interval_end), parse(logical_date), parse(run_after), run_type)
    assert moment.tzinfo is not None and moment.utcoffset().total_seconds() == 0
    assert moment.replace(tzinfo=None).isoformat() == expected


def test_the_run_type_may_be_airflows_enum_or_its_value():
    from airflow.sdk.api.datamodels._generated import DagRunType

    queued, asked = datetime(2026, 12, 3, 12, 36, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    assert as_of(queued, asked, queued, DagRunType.MANUAL) == as_of(queued, asked, queued, "manual") == asked
    assert as_of(queued, asked, queued, DagRunType.SCHEDULED) == queued.replace(minute=0)


def test_unknown_param_keys_are_refused_with_every_other_problem():
    message = problems_of(pairs=[], windw="5d", fee_bps=-1)
    assert "unknown param(s) 'windw'" in message
    assert "pairs must be a non-empty list" in message and "invalid fee" in message


def test_portfolio_top_defaults_to_5_and_is_checked_with_every_other_problem():
    assert plan_of().portfolio_top == 5 and plan_of(portfolio_top=1).portfolio_top == 1
    message = problems_of(portfolio_top=0, fee_bps=-1)
    assert "invalid portfolio_top 0: must be a whole number from 1 to 1000" in message and "invalid fee" in message
    assert "invalid portfolio_top '3'" in problems_of(portfolio_top="3")


@pytest.mark.parametrize("fee", [12.3456789, 0.1 + 0.2, 1e-05, 999.9999999999])
def test_plan_passes_the_fee_with_every_digit(fee):
    """`%g` sent 12.3456789 as 12.3457; the job must get the very float the user gave."""
    plan = make_plan({"pairs": ["BTCUSDT"], "fee_bps": fee}, "/store", "dag", "run", LOGICAL_DATE)
    (job,) = job_kwargs(plan, "/store", "run")
    command = job["container_overrides"]["command"]
    sent = command[command.index("--fee-bps") + 1]
    assert float(sent) == fee


# -- several strategies ----------------------------------------------------------------------------


def as_given(plan) -> list[dict]:
    """A plan's strategies as {"name", "params"}, for entries with the default label and execution."""
    for item in plan.strategies:
        assert item["label"] == item["name"] and item["execution"] == {}
    return [{"name": item["name"], "params": item["params"]} for item in plan.strategies]


def test_strategies_are_normalized_and_the_window_param_is_sma_trends_window():
    assert plan_of().strategies == [  # the default
        {"name": "sma_trend", "label": "sma_trend", "params": {"window": "15d"}, "execution": {}}
    ]
    assert as_given(plan_of()) == [{"name": "sma_trend", "params": {"window": "15d"}}]
    assert as_given(plan_of(window="2d")) == [{"name": "sma_trend", "params": {"window": "2d"}}]
    assert as_given(plan_of(window=["1d", "2d"])) == [{"name": "sma_trend", "params": {"window": "1d,2d"}}]
    # sma_trend listed without a window: the window param fills it, default or not
    listed = [{"name": "sma_trend"}, {"name": "momentum", "params": {"lookback": 48}}]
    assert as_given(plan_of(strategies=listed, window="3d")) == [
        {"name": "sma_trend", "params": {"window": "3d"}},
        {"name": "momentum", "params": {"lookback": "48"}},
    ]
    # values as text, numbers or lists; a list becomes the comma list the job's --param takes
    cross = plan_of(strategies=[{"name": "sma_cross", "params": {"fast": [12, "1d"], "slow": "5d:10d:5d"}}])
    assert as_given(cross) == [{"name": "sma_cross", "params": {"fast": "12,1d", "slow": "5d:10d:5d"}}]
    rsi = plan_of(strategies=[{"name": "rsi_reversion", "params": {"lower": 25.5, "upper": [70, 80.0]}}])
    assert rsi.strategies[0]["params"] == {"lower": "25.5", "upper": "70,80.0"}
    # sma_trend's window given in strategies, window param at its default: the strategies' one
    given = plan_of(strategies=[{"name": "sma_trend", "params": {"window": "4d"}}], window="15d")
    assert as_given(given) == [{"name": "sma_trend", "params": {"window": "4d"}}]


def test_window_given_twice_or_for_no_sma_trend_is_a_problem():
    message = problems_of(strategies=[{"name": "sma_trend", "params": {"window": "4d"}}], window="2d")
    assert "window '2d' and the window '4d' of sma_trend in strategies are both given" in message
    message = problems_of(strategies=[{"name": "momentum"}], window="2d")
    assert "window '2d' is sma_trend's window, but strategies does not list it" in message
    assert "window: invalid window 'abc'" in problems_of(window="abc")


def test_every_strategy_problem_is_in_one_message():
    too_many = {"entry": "1:1000:1", "exit": "1:101:1"}  # 101,000 combinations
    message = problems_of(
        pairs=["BTCUSDT", "bad-pair"],
        strategies=[
            {"name": "sma_crss", "params": {}},  # unknown name
            {"name": "sma_cross", "params": {"fst": "1d"}},  # unknown parameter
            {"name": "momentum", "params": {"lookback": "0h"}},  # bad value
            {"name": "ema_trend", "params": {"span": "1d:2d:-1"}},  # bad range step
            {"name": "rsi_reversion", "params": {"lower": "80", "upper": "20,30"}},  # no valid combination
            {"name": "momentum", "params": {}},  # listed twice
            {"name": "vwma_trend", "params": {"band": True}},  # not a value
            {"name": "sma_trend", "params": {}, "extra": 1},  # not {name, params}
            {"name": "donchian_breakout", "params": too_many},
        ],
        fee_bps=-1,
    )
    for part in (
        "invalid symbol(s) 'bad-pair'",
        f"unknown strategy(s) 'sma_crss': registered are {', '.join(strategy.names())}",
        "strategy sma_cross has no parameter 'fst' (its parameters: fast, slow)",
        "momentum lookback: invalid lookback '0h'",
        "ema_trend span: invalid span step '-1'",
        "no valid combination of rsi_reversion's parameters: lower (80) must be below upper (20)",
        "strategy 'momentum' is listed twice",
        "vwma_trend band: values must be text, a number or a list of them, not True",
        'strategies[7] must be {"name": ..., "params": {...}}',
        f"the grid of donchian_breakout has 101,000 combinations: at most {MAX_COMBINATIONS:,}",
        "invalid fee",
    ):
        assert part in message, part
    assert "strategies must be a non-empty list" in problems_of(strategies=[])


def test_jobs_are_chunks_times_strategies_within_max_jobs():
    pairs = [f"P{i:04d}USDT" for i in range(1000)]
    plan = make_plan({"pairs": pairs, "strategies": THREE}, "s3://b/d", "dag", "scheduled__x", LOGICAL_DATE)
    jobs = job_kwargs(plan, "s3://b/d", "scheduled__x")
    assert len(plan.chunks) == MAX_JOBS // 3 == 13 and len(jobs) == 39 <= MAX_JOBS
    assert [len(c) for c in plan.chunks] == [77] * 12 + [1000 - 12 * 77]
    # map index order: chunk by chunk, each chunk's strategies; job_units says the same as the commands
    assert [job_pairs(job) for job in jobs] == job_units(plan)
    assert [job["tags"]["strategy"] for job in jobs[:4]] == ["sma_trend", "sma_cross", "rsi_reversion", "sma_trend"]
    assert sorted(pair for job in jobs for pair in job_pairs(job)) == sorted(
        (pair, name) for pair in pairs for name in ("sma_trend", "sma_cross", "rsi_reversion")
    )
    names = [job["job_name"] for job in jobs]
    assert len(set(names)) == len(jobs) and all(BATCH_JOB_NAME.fullmatch(name) for name in names)
    assert all(job["tags"]["strategy"] in job["job_name"] for job in jobs)
    # a few pairs: one pair a job, per strategy; pairs_per_job still wins
    assert len(job_kwargs(plan_of(pairs=pairs[:10], strategies=THREE), "/s", "r")) == 30
    assert len(plan_of(pairs=pairs[:10], strategies=THREE, pairs_per_job=4).chunks) == 3


def test_each_strategys_job_writes_into_its_folder_with_its_grid():
    plan = plan_of(pairs=["BTCUSDT", "ETHUSDT"], strategies=THREE, rank_by="sharpe", pairs_per_job=2)
    trend, cross, rsi = (job["container_overrides"]["command"] for job in job_kwargs(plan, "/store", "run"))
    head = ["run", "--symbol", "BTCUSDT,ETHUSDT", "--data-url", "/store", "--start", plan.start, "--end", plan.end]
    assert trend == [*head, "--strategy", "sma_trend", "--param", "window=5d", "--fee-bps", "10",
                     "--results-url", f"{plan.results_url}/strategy=sma_trend"]  # fmt: skip
    # a grid: the job picks each pair's best combination by the ranking metric
    assert cross == [*head, "--strategy", "sma_cross", "--param", "fast=1d,2d", "--param", "slow=5d:10d:5d",
                     "--fee-bps", "10", "--holdout-days", "0", "--select-by", "sharpe",
                     "--results-url", f"{plan.results_url}/strategy=sma_cross"]  # fmt: skip
    assert rsi == [*head, "--strategy", "rsi_reversion", "--fee-bps", "10",
                   "--results-url", f"{plan.results_url}/strategy=rsi_reversion"]  # fmt: skip


def test_history_covers_the_longest_warm_up_of_any_strategy():
    # rsi_reversion's period 14 is seeded: 5 x 14 = 70 bars; ema_trend span 4d: 5 x 96 = 480 bars = 20 days
    plan = plan_of(
        lookback_days=30, strategies=[{"name": "rsi_reversion"}, {"name": "ema_trend", "params": {"span": "2d,4d"}}]
    )
    assert plan.warmup_bars == 480 and plan.history_days == 30 + 20 + 1
    assert plan_of(lookback_days=30, window="2d").history_days == 30 + 2 + 1  # sma_trend: 47 bars


def test_failed_backtest_tasks_map_to_their_pairs_and_strategy():
    plan = plan_of(pairs=["AAUSDT", "BBUSDT", "CCUSDT"], strategies=THREE, pairs_per_job=2)
    states = {("backtest", 4): "failed", ("backtest", 0): "success", ("refresh", 1): "failed"}
    assert tasks.failed_pairs(states, "backtest", job_units(plan)) == {
        ("CCUSDT", "sma_cross"): "backtest task failed"  # job 4: the second chunk's second strategy
    }
    assert tasks.failed_pairs(states, "refresh", plan.chunks) == {"CCUSDT": "refresh task failed"}


class TaskInstance:
    """What `tasks.failed_in_run` asks of the running task instance: the task API's states."""

    run_id = "run"

    def get_task_states(self, dag_id, task_ids, run_ids):
        assert (dag_id, run_ids) == ("crypto_backtest_daily", ["run"])
        states = {"backtest_0": "success", "backtest_1": "upstream_failed", "refresh_1": "failed", "plan": "success"}
        return {"run": {key: state for key, state in states.items() if key.rpartition("_")[0] in task_ids}}


def test_the_candles_and_rank_tasks_find_their_runs_failed_pairs_through_the_task_api():
    plan = plan_of(pairs=["AAUSDT", "BBUSDT", "CCUSDT"], pairs_per_job=2)
    assert tasks.failed_in_run(TaskInstance(), "backtest", job_units(plan)) == {
        ("CCUSDT", "sma_trend"): "backtest task upstream_failed"
    }
    failed = tasks.failed_in_run(TaskInstance(), "refresh", plan.chunks)
    assert failed == {"CCUSDT": "refresh task failed"}
    assert tasks.candles_event(plan, failed) == {"end": plan.end, "pairs": ["AAUSDT", "BBUSDT"], "failed": ["CCUSDT"]}

    from airflow.sdk.exceptions import AirflowSkipException

    with pytest.raises(AirflowSkipException, match="no pair was refreshed"):
        tasks.candles_event(plan, dict.fromkeys(plan.pairs, "refresh task failed"))


# -- users' strategies and the look-ahead check ----------------------------------------------------


def test_a_users_strategy_from_the_strategy_path_is_planned_like_a_built_in(strategy_folder):
    drop(strategy_folder, "range_position", RANGE_POSITION)
    plan = plan_of(strategies=[{"name": "range_position", "params": {"level": "0.5,0.8"}}])
    assert as_given(plan) == [{"name": "range_position", "params": {"level": "0.5,0.8"}}]
    assert lookahead_problems(plan.strategies) == []
    (job,) = job_kwargs(plan, "/store", "run")
    command = job["container_overrides"]["command"]
    at = command.index("--strategy")
    assert command[at : at + 4] == ["--strategy", "range_position", "--param", "level=0.5,0.8"]
    assert job_pairs(job) == [("BTCUSDT", "range_position")]


def test_plan_refuses_a_strategy_that_looks_ahead(strategy_folder):
    drop(strategy_folder, "peek_next", PEEK_NEXT)
    plan = plan_of(strategies=[{"name": "sma_trend"}, {"name": "peek_next"}])  # valid params ...
    (problem,) = lookahead_problems(plan.strategies)  # ... but it reads c_{t+1}
    assert problem.startswith("peek_next lag=1: looks ahead: the signal at bar ")

    from airflow.sdk.exceptions import AirflowFailException

    params = {"pairs": ["BTCUSDT"], "strategies": [{"name": "peek_next"}]}
    with pytest.raises(AirflowFailException) as caught:
        tasks.plan(params, None, "run", "/store", interval_end=LOGICAL_DATE, logical_date=None, run_after=LOGICAL_DATE)
    assert str(caught.value).startswith("look-ahead check failed: peek_next lag=1: looks ahead")
    assert "\n" not in str(caught.value)


def test_a_strategy_module_that_does_not_import_fails_plan_with_its_error(strategy_folder):
    (strategy_folder / "broken.py").write_text("import numpy as np\nraise RuntimeError('half-written')\n")
    message = problems_of(strategies=[{"name": "sma_trend"}])
    assert f"strategy module {strategy_folder / 'broken.py'} failed to import: RuntimeError: half-written" in message


@pytest.mark.parametrize("name", ["sma_trend", "sma_cross", "ema_trend", "momentum", "donchian_breakout",
                                  "rsi_reversion", "vwma_trend"])  # fmt: skip
def test_every_registered_strategy_passes_plans_quick_check(name):
    assert lookahead_problems(plan_of(strategies=[{"name": name}]).strategies) == []


# -- walk-forward ----------------------------------------------------------------------------------


def test_walk_forward_runs_in_every_job_and_the_run_ranks_out_of_sample():
    plan = plan_of(pairs=["BTCUSDT", "ETHUSDT"], strategies=THREE, walk_forward="1440:20d", lookback_days=120,
                   rank_by="sharpe", pairs_per_job=2)  # fmt: skip
    assert plan.walk_forward == "60d:20d"  # the job parser's spelling
    assert plan.rank_on == "out_of_sample" and plan.metric == "oos_sharpe"  # the stitched test windows
    assert plan.history_days == plan_of(lookback_days=120, strategies=THREE).history_days  # the same candles
    head = ["run", "--symbol", "BTCUSDT,ETHUSDT", "--data-url", "/store", "--start", plan.start, "--end", plan.end]
    tail = ["--fee-bps", "10", "--walk-forward", "60d:20d", "--select-by", "sharpe"]
    trend, cross, rsi = (job["container_overrides"]["command"] for job in job_kwargs(plan, "/store", "run"))
    # every strategy, one combination or a grid; no --holdout-days
    assert trend == [*head, "--strategy", "sma_trend", "--param", "window=5d", *tail,
                     "--results-url", f"{plan.results_url}/strategy=sma_trend"]  # fmt: skip
    assert cross == [*head, "--strategy", "sma_cross", "--param", "fast=1d,2d", "--param", "slow=5d:10d:5d", *tail,
                     "--results-url", f"{plan.results_url}/strategy=sma_cross"]  # fmt: skip
    assert rsi == [
        *head,
        "--strategy",
        "rsi_reversion",
        *tail,
        "--results-url",
        f"{plan.results_url}/strategy=rsi_reversion",
    ]
    # rank_on says nothing with a walk-forward (its default, in_sample, included); off: as before
    assert plan_of(walk_forward="60d:20d:Anchored", lookback_days=90, rank_on="in_sample").rank_on == "out_of_sample"
    assert plan_of(walk_forward="60d:20d:Anchored", lookback_days=90).walk_forward == "60d:20d:anchored"
    assert plan_of(walk_forward="100h:1d", lookback_days=5, rank_by="buy_hold_return").walk_forward == "100h:1d"
    off = plan_of(walk_forward="", rank_by="sharpe")
    assert (off.walk_forward, off.rank_on, off.metric) == ("", "in_sample", "sharpe")
    assert "--walk-forward" not in job_kwargs(off, "/store", "run")[0]["container_overrides"]["command"]
    assert plan_of(walk_forward="  ").walk_forward == "" and plan_of(walk_forward=None).walk_forward == ""


def test_walk_forward_problems_are_in_the_one_message():
    from backtest.simulation.walkforward import parse_walk_forward

    with pytest.raises(InputError) as parsed:  # the job's own parser and message
        parse_walk_forward("60d")
    message = problems_of(walk_forward="60d", fee_bps=-1, rank_on="out_of_sample")
    assert str(parsed.value) in message and "invalid fee" in message
    assert "rank_on out_of_sample needs holdout_days > 0 or a walk_forward" in message  # no valid walk-forward
    assert "the training window must be 24 to" in problems_of(walk_forward="12h:1d")
    assert "walk_forward must be text such as 180d:30d" in problems_of(walk_forward=30)

    message = problems_of(walk_forward="60d:20d", holdout_days=5, lookback_days=60, pairs=[])
    for part in (
        "holdout_days (5) and walk_forward (60d:20d) are both given: give one",
        "lookback_days (60) is too short for walk_forward 60d:20d: the backtest window must be longer than its 60d "
        "training window",
        "pairs must be a non-empty list",
    ):
        assert part in message, part
    assert "too short" not in problems_of(walk_forward="60d:20d", lookback_days=0)  # lookback itself is the problem
    # a window longer than the training window by a day, or an hour, has a fold (of that day or hour)
    assert plan_of(walk_forward="60d:20d:anchored", lookback_days=61).walk_forward == "60d:20d:anchored"
    assert plan_of(walk_forward="1439:1d", lookback_days=60).walk_forward == "1439h:1d"
    assert "too short for walk_forward 1441h:1d" in problems_of(walk_forward="1441:1d", lookback_days=60)


@pytest.mark.parametrize(
    "walk_forward, lookback_days", [("60d:20d", 60), ("60d:20d", 61), ("1439:1d", 60), ("1441:1d", 60), ("2d:1d", 2)]
)
def test_plan_accepts_a_walk_forward_exactly_when_the_jobs_window_has_a_fold(walk_forward, lookback_days):
    """plan's check against the job's own folds over the run's window (every hourly candle present)."""
    import numpy as np

    from backtest.params import HOUR_MS, parse_time_ms
    from backtest.simulation.walkforward import make_folds, parse_walk_forward

    start = parse_time_ms(plan_of(lookback_days=lookback_days).start)
    end = parse_time_ms(plan_of(lookback_days=lookback_days).end)
    open_time = np.arange(start, end, HOUR_MS, dtype=np.int64)
    try:
        folds = make_folds(parse_walk_forward(walk_forward), open_time, start, end)
    except InputError:
        folds = []
    try:
        plan_of(walk_forward=walk_forward, lookback_days=lookback_days)
        accepted = True
    except InputError as exc:
        assert "too short" in str(exc)
        accepted = False
    assert accepted == bool(folds)
