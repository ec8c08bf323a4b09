"""The `rank` step: gather a run's per-pair results into a ranked leaderboard (no Airflow import).

The leaderboard has one row per (pair, window); with one window that is one row per pair.
`best` marks each pair's best window (chosen by the job, on in-sample figures when there is a
hold-out); hold-out figures are in the `oos_*` columns. Pairs are ranked on their best row by the
chosen metric (descending, except `max_drawdown`, where smaller is better; undefined values
last), on in-sample or out-of-sample figures (`rank_on`). Pairs that failed (no result: the job
said why in `{symbol}.error.json`, or its task failed) follow, unranked, with their status. A
result whose last candle is more than `STALE_HOURS` older than the window's end is `stale`: it
did not see the whole window (did its refresh fail?), so it is not ranked either.

The run's cost: every job records its wall time and size in `_jobs/{job}.json`; the summary
adds them up and prices them at Fargate rates (per second, one-minute minimum per job).
"""

from __future__ import annotations

import io
import json
import math

import pandas as pd

from backtest.job import JOBS_DIR, LOWER_IS_BETTER
from backtest.metrics import METRIC_NAMES
from backtest.params import HOUR_MS, parse_time_ms
from backtest.storage import list_dir, read_bytes, resolve, write_bytes_atomic
from backtest_airflow import layout
from backtest_airflow.planning import RunPlan

STALE_HOURS = 6
FARGATE_MINIMUM_SECONDS = 60
OOS_COLUMNS = tuple(f"oos_{name}" for name in METRIC_NAMES)
COLUMNS = (
    "rank",
    "symbol",
    "status",
    "window",
    "window_bars",
    "best",
    *METRIC_NAMES,
    "excess_return",
    *OOS_COLUMNS,
    "first_bar",
    "last_bar",
    "split",
    "synthetic",
    "data_source",
    "fee_bps",
    "start",
    "end",
)


def pair_status(result: dict | None, error: dict | None, task_failure: str | None, end: str) -> str:
    if result is None:
        if error:
            return f"failed: {error['error']}"
        return f"failed: {task_failure}" if task_failure else "failed: no result"
    behind = (parse_time_ms(end) - HOUR_MS - parse_time_ms(result["last_bar"])) // HOUR_MS
    if behind > STALE_HOURS:
        return f"stale: last candle {result['last_bar']} is {behind}h before the window's end"
    return "ok"


def _read_json(folder, name: str) -> dict | None:
    data = read_bytes(folder.join(name))
    return json.loads(data) if data else None


def _rows(symbol: str, result: dict, status: str) -> list[dict]:
    """One row per window of a pair's result."""
    common = {
        "symbol": symbol,
        "status": status,
        "fee_bps": result["params"]["fee_bps"],
        **{k: result.get(k) for k in ("first_bar", "last_bar", "split", "synthetic", "data_source", "start", "end")},
    }
    if "sweep" not in result:
        windows = [{"window": result["params"]["window"], "window_bars": result["params"]["window_bars"], **result}]
        best = result["params"]["window"]
    else:
        windows, best = result["sweep"], result["best_window"]
    rows = []
    for item in windows:
        row = {**common, "window": item["window"], "window_bars": item["window_bars"], "best": item["window"] == best}
        row.update({name: item.get(name) for name in METRIC_NAMES})
        row.update({f"oos_{name}": value for name, value in (item.get("oos") or {}).items()})
        if row["total_return"] is not None and row["buy_hold_return"] is not None:
            row["excess_return"] = row["total_return"] - row["buy_hold_return"]
        rows.append(row)
    return rows


def build(plan: RunPlan, failed_tasks: dict[str, str]) -> pd.DataFrame:
    """The leaderboard of a run (see the module docstring for the rules)."""
    folder = resolve(plan.results_url)
    rows = []
    for symbol in plan.pairs:
        result = _read_json(folder, f"{symbol}.json")
        error = None if result else _read_json(folder, f"{symbol}.error.json")
        status = pair_status(result, error, failed_tasks.get(symbol), plan.end)
        if result:
            rows.extend(_rows(symbol, result, status))
        else:
            rows.append({"symbol": symbol, "status": status, "best": True})
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "rank"])
    table["best"] = table["best"].fillna(False).astype(bool)
    ranked = table[table["best"] & (table["status"] == "ok")].sort_values(
        plan.metric, ascending=plan.rank_by in LOWER_IS_BETTER, na_position="last", kind="stable"
    )
    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    failed = table[table["best"] & (table["status"] != "ok")].sort_values("symbol", kind="stable")
    others = table[~table["best"]].sort_values(["symbol", "window_bars"], kind="stable")
    parts = [part for part in (ranked, failed, others) if len(part)]
    board = pd.concat(parts, ignore_index=True) if parts else ranked
    return board.reindex(columns=list(COLUMNS)).astype({"rank": "Int64"})


def job_cost(record: dict, prices: dict[str, float]) -> dict:
    """One job's Fargate bill: per second of its size, with the one-minute minimum."""
    billed = max(FARGATE_MINIMUM_SECONDS, record["wall_seconds"])
    vcpu_hours, gb_hours = record["vcpu"] * billed / 3600, record["memory_mib"] / 1024 * billed / 3600
    return {
        "job_name": record["job_name"],
        "pairs": len(record["symbols"]),
        "wall_seconds": record["wall_seconds"],
        "vcpu": record["vcpu"],
        "memory_mib": record["memory_mib"],
        "billed_seconds": billed,
        "cost_on_demand_usd": vcpu_hours * prices["vcpu_hour"] + gb_hours * prices["gb_hour"],
        "cost_spot_usd": vcpu_hours * prices["spot_vcpu_hour"] + gb_hours * prices["spot_gb_hour"],
    }


def cost_summary(plan: RunPlan, prices: dict[str, float]) -> dict:
    """Add up the run's job records: pairs, jobs, vCPU-seconds and the Fargate price of them."""
    folder = resolve(plan.results_url).join(JOBS_DIR)
    records = [_read_json(folder, name) for name in list_dir(folder) if name.endswith(".json")]
    jobs = [job_cost(record, prices) for record in records if record]
    on_demand = sum(job["cost_on_demand_usd"] for job in jobs)
    spot = sum(job["cost_spot_usd"] for job in jobs)
    summary = {
        "pairs": len(plan.pairs),
        "jobs": len(jobs),
        "jobs_planned": len(plan.chunks),
        "job_seconds": round(sum(job["wall_seconds"] for job in jobs), 3),
        "vcpu_seconds": round(sum(job["vcpu"] * job["wall_seconds"] for job in jobs), 3),
        "billed_vcpu_seconds": round(sum(job["vcpu"] * job["billed_seconds"] for job in jobs), 3),
        "cost_on_demand_usd": round(on_demand, 6),
        "cost_spot_usd": round(spot, 6),
        "prices": prices,
        "per_job": jobs,
    }
    summary["text"] = (
        f"{summary['pairs']} pairs, {summary['jobs']} jobs, {summary['vcpu_seconds']:.1f} vCPU-seconds "
        f"({summary['billed_vcpu_seconds']:.0f} billed), about ${on_demand:.4f} on-demand / ${spot:.4f} Spot"
    )
    return summary


def _percent(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value) else f"{value:.2%}"


def title(plan: RunPlan, table: pd.DataFrame) -> str:
    """The leaderboard's title (also the report's), flagged when the candles were synthetic."""
    text = f"Leaderboard {plan.start} to {plan.end} (window {plan.window}, by {plan.rank_by})"
    if table["synthetic"].eq(True).any():  # all-NaN (float) when every pair failed: no fillna(False)
        text += " - SYNTHETIC DATA"
    return text


def to_markdown(table: pd.DataFrame, title: str, cost: dict | None = None) -> str:
    best = table[table["best"]]
    sweep = best["window"].nunique() > 1 or len(table) > len(best)
    shown = ["rank", "symbol", "status", "window", "total_return", "buy_hold_return", "sharpe", "max_drawdown"]
    shown += ["trades"] + (["oos_total_return", "oos_sharpe"] if best["oos_total_return"].notna().any() else [])
    view = best[shown].copy()
    for column in ("total_return", "buy_hold_return", "max_drawdown", "oos_total_return"):
        if column in view:
            view[column] = view[column].map(_percent)
    for column in ("sharpe", "oos_sharpe"):
        if column in view:
            view[column] = view[column].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    view = view.astype(object).where(view.notna(), "")
    text = f"# {title}\n\n" + view.to_markdown(index=False) + "\n"
    if sweep:
        text += f"\n`window` is each pair's best of {len(table) // max(len(best), 1)} windows; "
        text += f"every (pair, window) row is in {layout.LEADERBOARD_PARQUET} / {layout.LEADERBOARD_CSV}.\n"
    if cost:
        text += f"\nRun cost: {cost['text']}.\n"
    return text


def write(table: pd.DataFrame, results_url: str, title: str, cost: dict | None = None) -> dict[str, str]:
    """Write the leaderboard files (and the cost summary) atomically; returns their URLs by name."""
    folder = resolve(results_url)
    parquet = io.BytesIO()
    table.to_parquet(parquet, index=False)
    contents = {
        layout.LEADERBOARD_PARQUET: parquet.getvalue(),
        layout.LEADERBOARD_CSV: table.to_csv(index=False).encode(),
        layout.LEADERBOARD_MD: to_markdown(table, title, cost).encode(),
    }
    if cost:
        contents[layout.SUMMARY_JSON] = json.dumps({"title": title, "cost": cost}, indent=1).encode()
    paths = {}
    for name, data in contents.items():
        loc = folder.join(name)
        write_bytes_atomic(loc, data)
        paths[name] = loc.url
    return paths
