"""What every chart of the report shares: matplotlib (Agg) set up once, the SVG output, thinning and colours."""

from __future__ import annotations

import io
import math

import numpy as np
from markupsafe import Markup

from backtest_airflow.report.formatting import missing

MAX_PLOT_POINTS = 800  # per line; hourly curves are thinned to this (drawdowns keep their peaks)
STRATEGY_COLOR = "#1f5fbf"
BUY_HOLD_COLOR = "#9a9a9a"
FOLD_COLOR = "#c2571a"  # a walk-forward's fold boundaries
NEGATIVE_COLOR = "#c0392b"


def thin_index(n: int, limit: int = MAX_PLOT_POINTS) -> np.ndarray:
    """Indices of at most ~limit evenly spaced points, always keeping the first and the last."""
    if n <= limit:
        return np.arange(n)
    index = np.arange(0, n, math.ceil(n / limit))
    return index if index[-1] == n - 1 else np.append(index, n - 1)


def bucket_max(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Max of each bucket [index[i], index[i+1]) so that thinning keeps every drawdown's depth."""
    return np.maximum.reduceat(values, index) if len(index) < len(values) else values


def mpl():
    """matplotlib, on the Agg backend (no display), and its Figure class: imported on the first chart."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return matplotlib, Figure


def figure_svg(fig, salt: str, label: str) -> Markup:
    """A matplotlib figure as an inline <svg> element (no XML prolog, text kept as text).

    Markup: our own output (matplotlib escapes the text it writes); the label is escaped here.
    """
    matplotlib, _ = mpl()
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    svg = buffer.getvalue()
    body = svg[svg.index("<svg") + len("<svg") :]
    return Markup('<svg role="img" aria-label="{}"').format(label) + Markup(body)


def bar_axes(ax, percent: bool = False) -> None:
    """A chart of horizontal bars or boxes: `percent`, its x axis in percent; vertical grid lines behind the
    data and no top or right frame."""
    if percent:
        from matplotlib.ticker import PercentFormatter

        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(True, axis="x", color="#e3e6eb", linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_axisbelow(True)


def row_label(symbol: str, strategy: object, several: bool) -> str:
    """How a (pair, strategy) row is named on a chart: the symbol, with the strategy when a run has several."""
    return f"{symbol} {strategy}" if several and not missing(strategy) else symbol
