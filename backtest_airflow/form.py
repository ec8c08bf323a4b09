"""The daily DAG's trigger form: one Param per key `planning.make_plan` accepts, in form order.

The form checks types; `plan` checks values (and refuses keys the form does not have).
"""

from __future__ import annotations

from airflow.sdk import Param

from backtest_airflow import planning
from backtest_airflow.settings import configured_pairs


def params() -> dict[str, Param]:
    return {  # tests/dags/test_dag_integrity.py checks these keys against planning.PARAM_KEYS
        "pairs": Param(
            configured_pairs(),
            type="array",
            items={"type": "string"},
            minItems=1,
            description="Symbols to backtest, e.g. BTCUSDT (default: the `backtest_pairs` Variable, else pairs.txt).",
        ),
        "window": Param(
            "15d",
            type=["string", "integer"],
            description="Moving-average window: bars (360) or 12h / 15d / 2w; a sweep: 5d,10d,15d or 1d:60d:1d.",
        ),
        "fee_bps": Param(10, type="number", description="Fee per side in basis points (10 = 0.1 %)."),
        "lookback_days": Param(
            365, type="integer", description="Length of the backtest window, ending at the run's as-of moment."
        ),
        "rank_by": Param(
            "total_return", enum=list(planning.RANK_METRICS), description="Metric the leaderboard ranks by."
        ),
        "allow_failed_pairs": Param(
            False, type="boolean", description="Succeed even when some pairs failed (they stay listed as failed)."
        ),
        "holdout_days": Param(
            0,
            type="integer",
            minimum=0,
            description="Keep the last N days of the window out of sample: the best window is chosen before them.",
        ),
        "rank_on": Param(
            "in_sample", enum=list(planning.RANK_ON), description="Rank on in-sample or out-of-sample figures."
        ),
        "pairs_per_job": Param(
            0,
            type="integer",
            minimum=0,
            description=f"Pairs per Batch job (0: enough to keep a run at {planning.MAX_JOBS} jobs).",
        ),
    }
