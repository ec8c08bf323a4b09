"""The daily DAG's trigger form: one Param per key `planning.make_plan` accepts, in form order.

The form checks types (and that each strategy name is registered); `plan` checks values (and
refuses keys the form does not have).

The strategies are those registered when the DAG file is parsed: the built-ins and the modules
of the project's `strategies/` folder and of `BACKTEST_STRATEGY_PATH`. When a user's module
does not import, the DAG still loads: the form then does not check names, says why in the
`strategies` field's description (and the dag-processor's log), and `plan` fails every run with
the import error until the module is fixed.
"""

from __future__ import annotations

import logging

from airflow.sdk import Param

from backtest import strategy
from backtest.errors import InputError
from backtest.simulation.execution import DIRECTIONS
from backtest_airflow import planning, run_strategies
from backtest_airflow.settings import configured_pairs

log = logging.getLogger(__name__)
VALUE_TYPES = ["string", "number", "array"]  # one value, a comma list or a range as text; numbers; a list


def params() -> dict[str, Param]:
    return {  # tests/dags/test_dag_integrity.py checks these keys against planning.PARAM_KEYS
        "pairs": Param(
            configured_pairs(),
            type="array",
            items={"type": "string"},
            minItems=1,
            description="Symbols to backtest, e.g. BTCUSDT (default: the `backtest_pairs` Variable, else pairs.txt).",
        ),
        "strategies": strategies_param(),
        "window": Param(
            run_strategies.DEFAULT_WINDOW,
            type=["string", "integer"],
            description=(
                f"{run_strategies.WINDOW_STRATEGY}'s moving-average window, when `strategies` gives it none: bars (360) "
                "or 12h / 15d / 2w; a sweep: 5d,10d,15d or 1d:60d:1d."
            ),
        ),
        "fee_bps": Param(10, type="number", description="Fee per side in basis points (10 = 0.1 %)."),
        "slippage_bps": Param(
            0,
            type="number",
            minimum=0,
            description="Adverse slippage per fill (not on take-profits), in basis points, for every strategy.",
        ),
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
        "walk_forward": Param(
            "",
            type="string",
            description=(
                "Walk-forward analysis, empty for none: TRAIN:TEST such as 180d:30d (rolling) or 180d:30d:anchored. "
                "Each fold chooses every strategy's best combination on its TRAIN window and trades it on the TEST "
                "window after it; the run ranks on the stitched test windows (rank_on is then out_of_sample). "
                "lookback_days must be longer than TRAIN; not with holdout_days."
            ),
        ),
        "rank_on": Param(
            "in_sample",
            enum=list(planning.RANK_ON),
            description="Rank on in-sample or out-of-sample figures (a hold-out's; with walk_forward always out-of-sample).",
        ),
        "portfolio_top": Param(
            5,
            type="integer",
            minimum=1,
            maximum=planning.MAX_PORTFOLIO_TOP,
            description=(
                "With holdout_days or walk_forward: the report's portfolio also trades the top N pairs of each "
                "strategy, chosen on in-sample rank_by figures, equal-weight out of sample (docs/report.md, Portfolio)."
            ),
        ),
        "pairs_per_job": Param(
            0,
            type="integer",
            minimum=0,
            description=f"Pairs per Batch job (0: enough to keep a run at {planning.MAX_JOBS} jobs).",
        ),
    }


def strategies_param() -> Param:
    """The `strategies` field: a list of {"name", "params"}; its description lists every registered
    strategy with its parameters and their defaults."""
    item = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "params": {"type": "object", "additionalProperties": {"type": VALUE_TYPES}},
            "label": {"type": "string", "pattern": f"^{run_strategies.LABEL_PATTERN}$"},
            "direction": {"type": "string", "enum": list(DIRECTIONS)},
            **{key: {"type": VALUE_TYPES} for key in ("sl", "tp", "trail")},
            "size": {"type": ["number", "string"]},
            "borrow_bps_per_day": {"type": "number", "minimum": 0},
        },
        "required": ["name"],
        "additionalProperties": False,
    }
    intro = (
        'Strategies to backtest, each {"name": ..., "params": {param: values}}: values are one value, a list '
        "(5d,10d) or a range a:b:step (ends included); bar counts take 360, 12h, 15d or 2w; several values make "
        f"a grid; parameters not given keep their defaults. {run_strategies.WINDOW_STRATEGY}'s window defaults to "
        "the window field. Each entry may also say how it trades (docs/execution.md): direction (long, short, "
        "long_short), sl, tp, trail (fractions 0.05 or 5%; a list or a range joins the grid), size (0 to 1), "
        "borrow_bps_per_day, and a label (default: its name; the results folder and leaderboard name, so one "
        'strategy can be listed twice: {"name": "sma_trend", "label": "sma_ls", "direction": "long_short"}). '
    )
    try:
        described = strategy.describe_all()
    except InputError as exc:  # a broken user module: still a form, and plan says what is wrong
        log.warning("strategy list unavailable for the trigger form: %s", exc)
        description = f"{intro}The strategy modules do not import, so every run fails in plan until fixed: {exc}"
    else:
        item["properties"]["name"]["enum"] = [entry["name"] for entry in described]
        listed = "; ".join(f"{entry['name']}({_defaults(entry)}): {entry['description']}" for entry in described)
        description = f"{intro}Registered: {listed}."
    return Param(
        [{"name": run_strategies.WINDOW_STRATEGY, "params": {}}],
        type="array",
        items=item,
        minItems=1,
        description=description,
    )


def _defaults(described: dict) -> str:
    return ", ".join(f"{param['name']}={param['default']}" for param in described["params"])
