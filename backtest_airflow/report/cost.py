"""The run's cost: its jobs' wall time and size, priced at Fargate rates, for the leaderboard and the report.

Every job records its wall time and size in `_jobs/{job}.json` of its strategy's
folder; the summary adds them up over every strategy and prices them at Fargate rates (per
second, one-minute minimum per job).
"""

from __future__ import annotations

from backtest.data.storage import list_dir, resolve
from backtest.job import JOBS_DIR
from backtest_airflow import layout
from backtest_airflow.planning import RunPlan
from backtest_airflow.report.results import read_json

FARGATE_MINIMUM_SECONDS = 60


def job_cost(record: dict, prices: dict[str, float], strategy: str | None = None) -> dict:
    """One job's Fargate bill: per second of its size, with the one-minute minimum."""
    billed = max(FARGATE_MINIMUM_SECONDS, record["wall_seconds"])
    vcpu_hours, gb_hours = record["vcpu"] * billed / 3600, record["memory_mib"] / 1024 * billed / 3600
    return {
        "job_name": record["job_name"],
        **({"strategy": strategy} if strategy else {}),
        "pairs": len(record["symbols"]),
        "wall_seconds": record["wall_seconds"],
        "vcpu": record["vcpu"],
        "memory_mib": record["memory_mib"],
        "billed_seconds": billed,
        "cost_on_demand_usd": vcpu_hours * prices["vcpu_hour"] + gb_hours * prices["gb_hour"],
        "cost_spot_usd": vcpu_hours * prices["spot_vcpu_hour"] + gb_hours * prices["spot_gb_hour"],
    }


def cost_summary(plan: RunPlan, prices: dict[str, float]) -> dict:
    """Add up the run's job records (every strategy's): pairs, jobs, vCPU-seconds and their Fargate price."""
    jobs = []
    for item in plan.strategies:
        folder = resolve(layout.strategy_results_url(plan.results_url, layout.label_of(item))).join(JOBS_DIR)
        records = [read_json(folder, name) for name in list_dir(folder) if name.endswith(".json")]
        jobs += [job_cost(record, prices, layout.label_of(item)) for record in records if record]
    on_demand = sum(job["cost_on_demand_usd"] for job in jobs)
    spot = sum(job["cost_spot_usd"] for job in jobs)
    summary = {
        "pairs": len(plan.pairs),
        "strategies": len(plan.strategies),
        "jobs": len(jobs),
        "jobs_planned": len(plan.chunks) * len(plan.strategies),
        "job_seconds": round(sum(job["wall_seconds"] for job in jobs), 3),
        "vcpu_seconds": round(sum(job["vcpu"] * job["wall_seconds"] for job in jobs), 3),
        "billed_vcpu_seconds": round(sum(job["vcpu"] * job["billed_seconds"] for job in jobs), 3),
        "cost_on_demand_usd": round(on_demand, 6),
        "cost_spot_usd": round(spot, 6),
        "prices": prices,
        "per_job": jobs,
    }
    times = f" x {len(plan.strategies)} strategies" if len(plan.strategies) > 1 else ""
    summary["text"] = (
        f"{summary['pairs']} pairs{times}, {summary['jobs']} jobs, {summary['vcpu_seconds']:.1f} vCPU-seconds "
        f"({summary['billed_vcpu_seconds']:.0f} billed), about ${on_demand:.4f} on-demand / ${spot:.4f} Spot at Fargate prices"
    )
    return summary
