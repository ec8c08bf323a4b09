"""A (pair, strategy)'s result JSON as the rank step reads it: its combinations, and a combination as text.

Shared by the leaderboard, the grid file, the cost and the report, so that they read a result one way.
"""

from __future__ import annotations

import json

from backtest.data.storage import Location, read_bytes
from backtest.simulation.metrics import flat_metrics

# A combination's execution as table columns (null in a result from before the execution options)
EXECUTION_COLUMNS = ("direction", "sl", "tp", "trail", "size", "slippage_bps", "borrow_bps_per_day")


def params_text(params: dict) -> str:
    """A combination as text, as the user writes it: `fast=1d slow=5d` (a bar count's label, not its `_bars`)."""
    shown = [k for k in params if k != "fee_bps" and not (k.endswith("_bars") and k.removesuffix("_bars") in params)]
    return " ".join(f"{k}={value_text(params[k])}" for k in shown)


def strategies_text(strategies: list[dict]) -> str:
    """A run's strategies and their grids as given: `sma_trend window=15d; sma_cross fast=1d:3d:1d slow=5d`
    (a label other than the name first: `sma_ls=sma_trend direction=long_short`)."""
    return "; ".join(
        " ".join(
            [
                item["name"] if item.get("label", item["name"]) == item["name"] else f"{item['label']}={item['name']}",
                *(f"{k}={v}" for k, v in (item.get("params") or {}).items()),
                *(f"{k}={v}" for k, v in (item.get("execution") or {}).items()),
            ]
        )
        for item in strategies
    )


def execution_columns(execution: dict) -> dict:
    """A combination's `execution` as EXECUTION_COLUMNS (None where absent)."""
    return {name: execution.get(name) for name in EXECUTION_COLUMNS}


def value_text(value) -> str:
    """A parameter's value as text (a float as `:g` writes it)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def combinations(result: dict) -> tuple[list[dict], int]:
    """Every combination a result holds, as {"params", "execution", <metrics>, "oos"?} rows (the
    metrics flat: `flat_metrics`), and the chosen one's index: the row with the result's `best`
    params and its `execution` (a grid of stop levels has rows of equal params).

    One row unless the job ran a grid or a hold-out (then its `sweep`, in grid order).
    """
    if "sweep" not in result:
        params = {k: v for k, v in result["params"].items() if k != "fee_bps"}
        return [{"params": params, "execution": result.get("execution") or {}, **flat_metrics(result)}], 0
    rows = [
        {
            "params": row["params"],
            "execution": row.get("execution") or {},
            **flat_metrics(row),
            **({"oos": flat_metrics(row["oos"])} if "oos" in row else {}),
        }
        for row in result["sweep"]
    ]
    chosen = (result["best"], result.get("execution") or {})
    best = next((i for i, row in enumerate(rows) if (row["params"], row["execution"]) == chosen), None)
    if best is None:
        raise ValueError(
            f"{result['symbol']} ({result.get('strategy')}): its best {result['best']} is not in its sweep"
        )
    return rows, best


def read_json(folder: Location, name: str) -> dict | None:
    """A JSON file of a results folder (a result, an error or a job record), or None when there is none."""
    data = read_bytes(folder.join(name))
    return json.loads(data) if data else None
