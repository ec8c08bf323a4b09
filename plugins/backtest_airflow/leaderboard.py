"""The `rank` step: gather a run's per-pair results into a ranked leaderboard (no Airflow import).

Every planned pair gets a row. Pairs whose job produced a result are ranked by the chosen
metric (descending, except `max_drawdown`, where smaller is better; undefined values last);
pairs that failed (refresh or backtest task failed, or no result file) follow, unranked, with
their status. A result whose last candle is more than `STALE_HOURS` older than the window's
end is marked `stale`: it did not see the whole window, so it is not ranked either.
"""

from __future__ import annotations

import io
import json

import pandas as pd

from backtest.metrics import METRIC_NAMES
from backtest.params import HOUR_MS, parse_time_ms
from backtest.storage import read_bytes, resolve, write_bytes_atomic
from backtest_airflow.planning import ASCENDING_METRICS

STALE_HOURS = 6
FILES = ("leaderboard.parquet", "leaderboard.csv", "leaderboard.md")
COLUMNS = (
    "rank",
    "symbol",
    "status",
    *METRIC_NAMES,
    "excess_return",
    "first_bar",
    "last_bar",
    "synthetic",
    "data_source",
    "window",
    "fee_bps",
    "start",
    "end",
)


def pair_status(symbol: str, result: dict | None, end: str, failed_tasks: dict[str, str]) -> str:
    if symbol in failed_tasks:
        return f"failed: {failed_tasks[symbol]}"
    if result is None:
        return "failed: no result"
    behind = (parse_time_ms(end) - HOUR_MS - parse_time_ms(result["last_bar"])) // HOUR_MS
    if behind > STALE_HOURS:
        return f"stale: last candle {result['last_bar']} is {behind}h before the window's end"
    return "ok"


def build(pairs: list[str], results_url: str, rank_by: str, end: str, failed_tasks: dict[str, str]) -> pd.DataFrame:
    """One row per planned pair, ranked; see the module docstring for the rules."""
    folder = resolve(results_url)
    rows = []
    for symbol in pairs:
        data = read_bytes(folder.join(f"{symbol}.json"))
        result = json.loads(data) if data else None
        row = {"symbol": symbol, "status": pair_status(symbol, result, end, failed_tasks)}
        if result:
            row.update({k: result.get(k) for k in COLUMNS if k in result})
            row.update(window=result["params"]["window"], fee_bps=result["params"]["fee_bps"])
            if result["total_return"] is not None and result["buy_hold_return"] is not None:
                row["excess_return"] = result["total_return"] - result["buy_hold_return"]
        rows.append(row)
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "rank"])
    ok = table[table["status"] == "ok"].sort_values(
        rank_by, ascending=rank_by in ASCENDING_METRICS, na_position="last", kind="stable"
    )
    ok.insert(0, "rank", range(1, len(ok) + 1))
    rest = table[table["status"] != "ok"].sort_values("symbol")
    rest.insert(0, "rank", pd.NA)
    return pd.concat([ok, rest], ignore_index=True).astype({"rank": "Int64"})


def to_markdown(table: pd.DataFrame, title: str) -> str:
    shown = ["rank", "symbol", "status", "total_return", "buy_hold_return", "sharpe", "max_drawdown", "trades"]
    view = table[shown].copy()
    for column in ("total_return", "buy_hold_return", "max_drawdown"):
        view[column] = view[column].map(lambda v: "" if pd.isna(v) else f"{v:.2%}")
    view["sharpe"] = view["sharpe"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    view = view.astype(object).where(view.notna(), "")
    return f"# {title}\n\n" + view.to_markdown(index=False) + "\n"


def write(table: pd.DataFrame, results_url: str, title: str) -> dict[str, str]:
    """Write the three leaderboard files atomically; returns their URLs by name."""
    folder = resolve(results_url)
    parquet = io.BytesIO()
    table.to_parquet(parquet, index=False)
    contents = {
        "leaderboard.parquet": parquet.getvalue(),
        "leaderboard.csv": table.to_csv(index=False).encode(),
        "leaderboard.md": to_markdown(table, title).encode(),
    }
    paths = {}
    for name, data in contents.items():
        loc = folder.join(name)
        write_bytes_atomic(loc, data)
        paths[name] = loc.url
    return paths
