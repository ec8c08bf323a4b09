"""What the report says about its figures: how they were chosen (a grid's in-sample best is
hindsight), what `dsr` and `psr` mean, and which column it leaves out because it repeats another.

`page.build_report` passes these to `templates/report.html.j2`: `selection_notes` in the page's
header (and the hindsight rows are marked in the leaderboard's `selection` column), the others
under the leaderboard.
"""

from __future__ import annotations

import pandas as pd

from backtest_airflow.report.columns import cagr_repeats_return, has_walk_forward
from backtest_airflow.report.formatting import missing

PSR_TEXT = (
    "PSR, the probabilistic Sharpe ratio (Bailey & López de Prado): the probability that the true Sharpe "
    "ratio exceeds 0, allowing for the length, skewness and kurtosis of the returns."
)
DSR_TEXT = (
    "DSR, the deflated Sharpe ratio (Bailey & López de Prado, 2014): the probability that the chosen "
    "combination's true Sharpe ratio exceeds SR\N{SUBSCRIPT ZERO}, the Sharpe ratio that the best of the N "
    "combinations tried would be expected to reach by luck alone (from the spread of their N Sharpe ratios), "
    "allowing for the length, skewness and kurtosis of its returns; computed on the window the combination "
    "was chosen on. " + "PSR, the probabilistic Sharpe ratio: the same probability against a true Sharpe ratio of 0."
)

TRADES_TEXT = (
    "Trades, closed ones only, each trade's return as docs/execution.md defines it: profit factor, the sum of "
    "the winning trades' returns over the absolute sum of the losing ones'; expectancy, the mean trade return; "
    "SQN, the square root of the number of trades times their mean return over its standard deviation; loss "
    "streak, the most losing trades in a row. Every trade statistic of the top and bottom pairs is below their "
    "charts, with their trades."
)


def _rows(best: pd.DataFrame, selection: str) -> pd.DataFrame:
    if "selection" not in best:
        return best.iloc[:0]
    return best[(best["selection"] == selection) & (best["status"] == "ok")]


def _count(values: pd.Series) -> str:
    """How many combinations: one number, or the range when the rows differ."""
    numbers = sorted({int(v) for v in pd.to_numeric(values, errors="coerce").dropna()})
    if not numbers:
        return "N"
    low, high = numbers[0], numbers[-1]
    return f"{low:,}" if low == high else f"{low:,} to {high:,}"


def selection_notes(best: pd.DataFrame, metric: str, run_info: dict) -> list[dict]:
    """The header's notes on how the ranked figures were chosen (`kind`: hindsight, holdout or
    walk-forward; `text`), one per kind of `selection` among the rows (ok rows only)."""
    notes = []
    hindsight = _rows(best, "in_sample_best")
    if len(hindsight):
        several = "strategy" in best and best["strategy"].nunique() > 1  # say whose figures
        parts = []
        for strategy, rows in hindsight.groupby("strategy", sort=False) if several else [(None, hindsight)]:
            count = _count(rows["combinations"]) if "combinations" in rows else "N"
            text = f"in-sample best of {count} combinations: hindsight, not an out-of-sample result"
            parts.append(f"{strategy}: {text}" if strategy else text)
        text = "; ".join(parts)
        notes.append(
            {
                "kind": "hindsight",
                "text": f"{text if several else text[0].upper() + text[1:]}. Each row's figures are those of the combination that did "
                "best over this very window, chosen after the fact; the DSR column discounts its Sharpe ratio "
                "for the combinations tried.",
            }
        )
    if len(_rows(best, "holdout")):
        if metric.startswith("oos_"):
            ranked = f"ranked on the out-of-sample figures ({metric}: the OOS columns, after the split)"
        else:
            ranked = (
                f"ranked on the in-sample figures ({metric}), the ones the combination was chosen on "
                "(hindsight within the in-sample part: the IS columns); the OOS columns are the hold-out's"
            )
        notes.append(
            {
                "kind": "holdout",
                "text": "Hold-out: each combination was chosen on the in-sample part of the window; "
                f"the rows are {ranked}.",
            }
        )
    if has_walk_forward(best):
        notes.append(
            {
                "kind": "walk-forward",
                "text": f"Walk-forward {run_info.get('walk_forward') or ''}: every figure shown is out of sample, "
                "the folds' test windows stitched together, each traded with the combination its training window "
                "chose; next params: the last fold's choice, what the run would trade next. The whole window's grid "
                "best (chosen with hindsight) is not shown; it is in leaderboard.parquet (params and the plain "
                "metric columns).",
            }
        )
    return notes


def leaderboard_notes(best: pd.DataFrame, columns: list[str]) -> list[str]:
    """The sentences under the leaderboard: what DSR and PSR mean (when shown), and why `cagr` is not."""
    notes = []
    if "dsr" in columns or "psr" in columns or "oos_psr" in columns:
        notes.append(DSR_TEXT if "dsr" in columns else PSR_TEXT)
    if any(c in columns for c in ("profit_factor", "oos_profit_factor")):
        notes.append(TRADES_TEXT)
    gap = None if has_walk_forward(best) else cagr_repeats_return(best)
    if gap is not None and "cagr" not in columns:
        notes.append(
            "cagr is not shown: over this window of about one year it repeats the return (cagr = "
            f"equity^(8760 / bars) - 1; the largest difference is {gap * 100:.2f} percentage points)."
        )
    return notes


def best_card_label(metric: str, best: pd.DataFrame) -> str:
    """The "best by" card's label, marked when the top row's figures are hindsight."""
    ranked = best[(best["status"] == "ok") & best["rank"].notna()].sort_values("rank") if "rank" in best else best
    top = None if ranked.empty or "selection" not in ranked else ranked["selection"].iloc[0]
    return f"best by {metric}" + (
        " (in-sample best: hindsight)" if not missing(top) and top == "in_sample_best" else ""
    )
