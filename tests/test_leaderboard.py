"""The leaderboard's cost accounting (backtest_airflow/leaderboard.py): Fargate prices applied to the
jobs' records, with Batch's one-minute minimum."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime

import pytest

from backtest_airflow import leaderboard
from backtest_airflow.planning import make_plan

PRICES = {"vcpu_hour": 0.04048, "gb_hour": 0.004445, "spot_vcpu_hour": 0.0129159, "spot_gb_hour": 0.001418}


def test_cost_summary_adds_up_job_records(tmp_path):
    results = tmp_path / "run"
    (results / "_jobs").mkdir(parents=True)
    for name, seconds in (("a", 30.0), ("b", 150.0)):
        record = {
            "job_name": name,
            "symbols": [name],
            "failed": [],
            "wall_seconds": seconds,
            "vcpu": 1,
            "memory_mib": 2048,
        }
        (results / "_jobs" / f"{name}.json").write_text(json.dumps(record))
    day = datetime.fromisoformat("2026-10-01T00:00:00+00:00")
    plan = make_plan({"pairs": ["AAUSDT", "BBUSDT"], "pairs_per_job": 1}, "/unused", "dag", "run", day)
    cost = leaderboard.cost_summary(dataclasses.replace(plan, results_url=str(results)), PRICES)
    assert cost["jobs"] == 2 and cost["vcpu_seconds"] == 180.0
    assert cost["billed_vcpu_seconds"] == 60 + 150  # one-minute minimum for the short job
    hours = 210 / 3600
    assert cost["cost_on_demand_usd"] == pytest.approx(hours * 0.04048 + hours * 2 * 0.004445, abs=1e-6)
    assert cost["cost_spot_usd"] == pytest.approx(hours * 0.0129159 + hours * 2 * 0.001418, abs=1e-6)
    assert cost["text"].startswith("2 pairs, 2 jobs, 180.0 vCPU-seconds")
    short, long = sorted(cost["per_job"], key=lambda job: job["wall_seconds"])
    assert short["billed_seconds"] == 60 and long["billed_seconds"] == 150
    assert long["cost_on_demand_usd"] == pytest.approx(150 / 3600 * (0.04048 + 2 * 0.004445))
    assert short["cost_spot_usd"] + long["cost_spot_usd"] == pytest.approx(cost["cost_spot_usd"], abs=1e-6)
