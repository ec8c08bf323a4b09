"""The cards at the top of the report: pairs, ranked, failed, the best row, the median return and
how many rows beat buy and hold (of the figures the run stands on: in and out of sample with a
hold-out, the stitched test windows with a walk-forward). Values are written as the tables write them."""

from __future__ import annotations

import pandas as pd

from backtest_airflow.report import notes
from backtest_airflow.report.charts.base import row_label
from backtest_airflow.report.formatting import format_value


def summary_cards(
    best: pd.DataFrame, ranked: pd.DataFrame, metric: str, several: bool, prefix: str = "", holdout: bool = False
) -> list[tuple[str, str]]:
    """The cards at the top; `prefix` "oos_": the returns are a walk-forward's stitched out-of-sample
    ones; `holdout`: the unprefixed figures are a hold-out's in-sample part (so labelled)."""
    pairs = best["symbol"].nunique() if several else len(best)
    cards = [("pairs", str(pairs))]
    if several:
        cards.append(("strategies", str(best["strategy"].nunique())))
    cards += [("ranked", str(len(ranked))), ("failed", str(len(best) - len(ranked)))]
    if len(ranked):
        top = ranked.iloc[0]
        if metric in ranked:
            name = row_label(top["symbol"], top.get("strategy"), several)
            best_label = notes.best_card_label(metric, ranked)
            best_label += " (in sample)" if holdout and not metric.startswith("oos_") else ""
            cards.append((best_label, f"{name} {format_value(metric, top[metric])}"))
        if not holdout:
            cards += _return_cards(ranked, prefix, " (out of sample)" if prefix else "")
        else:  # in sample, then out of sample
            cards += _return_cards(ranked, "", " (in sample)")
            if {"oos_total_return", "oos_buy_hold_return"} <= set(ranked):
                cards += _return_cards(ranked, "oos_", " (out of sample)")
        if prefix and "wf_efficiency" in ranked:
            efficiency = pd.to_numeric(ranked["wf_efficiency"], errors="coerce").dropna()
            if len(efficiency):
                cards.append(("median WF efficiency", format_value("wf_efficiency", float(efficiency.median()))))
    return cards


def _return_cards(ranked: pd.DataFrame, prefix: str, what: str) -> list[tuple[str, str]]:
    """The median return and how many rows beat buy and hold, of the `prefix` figures."""
    cards = []
    returns = pd.to_numeric(ranked[prefix + "total_return"], errors="coerce").dropna()
    if len(returns):
        cards.append((f"median return{what}", format_value("total_return", float(returns.median()))))
    if prefix:
        excess = pd.to_numeric(ranked["oos_total_return"] - ranked["oos_buy_hold_return"], errors="coerce").dropna()
    else:
        excess = pd.to_numeric(ranked["excess_return"], errors="coerce") if "excess_return" in ranked else None
        excess = None if excess is None else excess.dropna()
    if excess is not None:
        cards.append((f"beat buy & hold{what}", f"{int((excess > 0).sum())} of {len(excess)}"))
    return cards
