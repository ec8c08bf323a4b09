"""A planned run's jobs rendered, complete: one per (chunk of pairs, strategy), with its AWS Batch
name, container command, environment, size and UI tags. No Airflow import.

Mapped values are not Jinja-rendered, so the `chunks` and `jobs` tasks return these as they are.
The command is the container's (its ENTRYPOINT is `python -m backtest`); the local runner prepends
that entrypoint and runs exactly the same arguments. Map index i of the `backtest` task is job i
of `job_kwargs` (chunk by chunk, each chunk's strategies), so `job_units` says what it worked on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import datetime

from backtest.simulation.metrics import SELECT_METRICS
from backtest_airflow import layout
from backtest_airflow.planning import RunPlan
from backtest_airflow.run_strategies import is_grid as has_grid


def job_command(plan: RunPlan, symbols: list[str], entry: dict, data_url: str, is_grid: bool) -> list[str]:
    """The container command (after the `python -m backtest` entrypoint) for one chunk of pairs and
    one strategy (`entry`, an item of `plan.strategies`; `is_grid`: it has several combinations)."""
    command = ["run", "--symbol", ",".join(symbols), "--data-url", data_url, "--start", plan.start, "--end", plan.end]
    command += ["--strategy", entry["name"]]
    for key, values in entry["params"].items():
        command += ["--param", f"{key}={values}"]
    for key, value in (entry.get("execution") or {}).items():  # the option of the same name (docs/execution.md)
        command += [f"--{key.replace('_', '-')}={value}"]  # one token: a value may start with "-"
    command += ["--fee-bps", repr(float(plan.fee_bps)).removesuffix(".0")]  # every digit
    if plan.slippage_bps:
        command += ["--slippage-bps", repr(float(plan.slippage_bps)).removesuffix(".0")]
    select_by = plan.rank_by if plan.rank_by in SELECT_METRICS else "total_return"
    if plan.walk_forward:  # every strategy, a grid or not: each fold chooses (among one, then) and trades
        command += ["--walk-forward", plan.walk_forward, "--select-by", select_by]
    elif plan.holdout_days or is_grid:
        command += ["--holdout-days", str(plan.holdout_days), "--select-by", select_by]
    return [*command, "--results-url", layout.strategy_results_url(plan.results_url, layout.label_of(entry))]


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
    """Each job's (pair, strategy label) pairs, in job (map index) order."""
    return [[(symbol, layout.label_of(entry)) for symbol in symbols] for symbols, entry in _jobs(plan)]


def chunk_kwargs(plan: RunPlan) -> list[dict]:
    """Per chunk of pairs, what a refresh task maps over: its pairs and their label."""
    return [{"symbols": symbols, "pairs": pairs_label(symbols)} for symbols in plan.chunks]


def job_kwargs(plan: RunPlan, data_url: str, run_id: str, vcpu: float = 1.0, memory_mib: int = 2048) -> list[dict]:
    """Per (chunk, strategy), the kwargs `BatchOperator.expand_kwargs` (and our local runner) take."""
    end = datetime.fromisoformat(plan.end)
    is_grid = {layout.label_of(entry): has_grid(entry) for entry in plan.strategies}
    jobs = []
    for symbols, entry in _jobs(plan):
        label = layout.label_of(entry)
        name = job_name(symbols, label, end, run_id)
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
                    "command": job_command(plan, symbols, entry, data_url, is_grid[label]),
                    "environment": [{"name": k, "value": v} for k, v in environment.items()],
                    "resourceRequirements": [
                        {"type": "VCPU", "value": f"{vcpu:g}"},
                        {"type": "MEMORY", "value": str(memory_mib)},
                    ],
                },
                "tags": {"pairs": pairs_label(symbols), "strategy": label},
            }
        )
    return jobs


def pairs_label(symbols: list[str]) -> str:
    """How a chunk of pairs shows in the UI: `BTCUSDT`, or `BTCUSDT +24`."""
    return symbols[0] if len(symbols) == 1 else f"{symbols[0]} +{len(symbols) - 1}"


def job_pairs(job: dict) -> list[tuple[str, str]]:
    """The (pair, strategy label) pairs a rendered job backtests (from its command and tags)."""
    command = job["container_overrides"]["command"]
    label = job.get("tags", {}).get("strategy") or command[command.index("--strategy") + 1]
    return [(symbol, label) for symbol in command[command.index("--symbol") + 1].split(",")]
