"""A label's equal-weight portfolio against the equal-weight buy-and-hold of its pairs, and the
selection test's out-of-sample curve against its buy-and-hold (the curves of `report.portfolio`)."""

from __future__ import annotations

import numpy as np
from markupsafe import Markup

from backtest_airflow.report.charts.base import BUY_HOLD_COLOR, STRATEGY_COLOR, figure_svg, mpl, thin_index
from backtest_airflow.report.formatting import format_value

SELECTED_COLOR = "#2e8b57"
PANELS = (  # (strategy curve, its buy-and-hold, panel title, colour)
    ("portfolio", "buy_hold", "all ranked pairs", STRATEGY_COLOR),
    ("selected", "selected_buy_hold", "selected in sample, traded out of sample", SELECTED_COLOR),
)


def portfolio_chart(
    label: str, curves: dict[str, tuple[np.ndarray, np.ndarray]], window: str | None = None
) -> Markup | None:
    """Growth of 1 of the label's curves, one panel per (curve, buy-and-hold) pair present, as SVG
    (`window`: which part of the run's window the first panel covers); the line of curve `c` is the
    SVG group `portfolio-<c>`."""
    panels = [panel for panel in PANELS if panel[0] in curves]
    if not panels:
        return None
    _, Figure = mpl()
    import matplotlib.dates as mdates

    fig = Figure(figsize=(8.6, 3.0 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (curve, hold, title, color) in zip(axes, panels, strict=True):
        title = f"{title} ({window})" if window and curve == "portfolio" else title
        parts = [f"{title}: {format_value('total_return', curves[curve][1][-1] - 1.0)}"]
        for name, line_color, text in ((curve, color, "equal weight"), (hold, BUY_HOLD_COLOR, "buy & hold")):
            if name not in curves:
                continue
            times, equity = curves[name]
            index = thin_index(len(times))
            (line,) = ax.plot(times[index], equity[index], color=line_color, linewidth=1.2, label=text)
            line.set_gid(f"portfolio-{name}")
        if hold in curves:
            parts.append(f"buy & hold {format_value('total_return', curves[hold][1][-1] - 1.0)}")
        ax.axhline(1.0, color="#444", linewidth=0.6, linestyle=":")
        ax.set_title(f"{label}, " + ", ".join(parts), loc="left", fontsize=11)
        ax.set_ylabel("growth of 1")
        ax.legend(loc="best", frameon=True, framealpha=0.85, edgecolor="none", fontsize=9)
        locator = mdates.AutoDateLocator(minticks=4, maxticks=9)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.grid(True, color="#e3e6eb", linewidth=0.6)
        ax.spines[["top", "right"]].set_visible(False)
        ax.margins(x=0)
    return figure_svg(fig, f"portfolio-{label}", f"Equal-weight portfolio of {label} against buy and hold")
