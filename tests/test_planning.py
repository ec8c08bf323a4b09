"""Planning a run (backtest_airflow/planning.py): params checked, pairs in chunks, one job a chunk,
its container command, and the moment a run is as of."""

from __future__ import annotations

from datetime import datetime

import pytest

from backtest.errors import InputError
from backtest_airflow.planning import MAX_JOBS, as_of, job_kwargs, job_pairs, make_plan

LOGICAL_DATE = datetime.fromisoformat("2026-10-01T00:00:00+00:00")


def test_thousand_pairs_make_few_jobs():
    from airflow.configuration import conf

    pairs = [f"P{i:04d}USDT" for i in range(1000)]
    plan = make_plan({"pairs": pairs}, "s3://b/d", "dag", "scheduled__x", LOGICAL_DATE)
    assert len(plan.chunks) == MAX_JOBS == 40 and {len(c) for c in plan.chunks} == {25}
    jobs = job_kwargs(plan, "s3://b/d", "scheduled__x")
    assert len({job["job_name"] for job in jobs}) == 40 and max(len(job["job_name"]) for job in jobs) <= 128
    assert [pair for job in jobs for pair in job_pairs(job)] == pairs
    assert jobs[0]["tags"] == {"pairs": "P0000USDT +24"}
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
        "--window",
        "15d",
        "--fee-bps",
        "10",
        "--results-url",
        plan.results_url,
    ]
    assert job["job_name"].startswith("backtest-BTCUSDT-20261002-") and len(job["job_name"]) <= 128


@pytest.mark.parametrize(
    "interval_end, logical_date, run_after, expected",
    [
        # scheduled or backfill run of D (@daily: a zero-length interval at D 00:00)
        ("2026-10-02T00:00:00+00:00", "2026-10-02T00:00:00+00:00", "2026-10-02T00:00:00+00:00", "2026-10-02T00:00:00"),
        # a trigger at 20:58 with that logical date: the candle opened at 20:00 has not closed
        (None, "2026-10-02T20:58:31+00:00", "2026-10-02T20:58:31+00:00", "2026-10-02T20:00:00"),
        # a trigger with no logical date (`airflow dags trigger`, REST `"logical_date": null`)
        (None, None, "2026-10-02T07:59:59.999+00:00", "2026-10-02T07:00:00"),
        # another time zone: the same instant, in UTC
        (None, "2026-10-02T09:30:00+02:00", "2026-10-02T09:30:00+02:00", "2026-10-02T07:00:00"),
    ],
)
def test_a_runs_as_of_moment_is_its_interval_end_logical_date_or_run_after_down_to_the_hour(
    interval_end, logical_date, run_after, expected
):
    parse = lambda text: text and datetime.fromisoformat(text)  # noqa: E731
    moment = as_of(parse(interval_end), parse(logical_date), parse(run_after))
    assert moment.tzinfo is not None and moment.utcoffset().total_seconds() == 0
    assert moment.replace(tzinfo=None).isoformat() == expected


def test_unknown_param_keys_are_refused_with_every_other_problem():
    with pytest.raises(InputError) as caught:
        make_plan({"pairs": [], "windw": "5d", "fee_bps": -1}, "/store", "dag", "run", LOGICAL_DATE)
    message = str(caught.value)
    assert "unknown param(s) 'windw'" in message
    assert "pairs must be a non-empty list" in message and "invalid fee" in message
    assert "\n" not in message  # one line


@pytest.mark.parametrize("fee", [12.3456789, 0.1 + 0.2, 1e-05, 999.9999999999])
def test_plan_passes_the_fee_with_every_digit(fee):
    """`%g` sent 12.3456789 as 12.3457; the job must get the very float the user gave."""
    plan = make_plan({"pairs": ["BTCUSDT"], "fee_bps": fee}, "/store", "dag", "run", LOGICAL_DATE)
    (job,) = job_kwargs(plan, "/store", "run")
    command = job["container_overrides"]["command"]
    sent = command[command.index("--fee-bps") + 1]
    assert float(sent) == fee
