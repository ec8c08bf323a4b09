"""The run report: one self-contained HTML page per DAG run, beside the leaderboard (no Airflow import).

`build_report(results_url, leaderboard_df, run_info)` returns the page; `write(...)` stores it
atomically as `report.html` in the run's results folder (S3 or local). The page needs no network:
styles, the table-sorting script and the charts (matplotlib, Agg, rendered to inline SVG) are all
inside it, and its Content-Security-Policy forbids loading anything else and runs no script but
that one (allowed by its SHA-256 hash).

What it shows:

- a banner when any result comes from synthetic candles;
- the leaderboard, one row per pair (in a sweep, the pair's best window; every (pair, window)
  row is in a folded table below), sortable by clicking a column header; failed pairs with
  their status;
- the strategy's equity curve against buy-and-hold (close / first close, read from the candle
  store) and both drawdown curves, for the top and bottom `CURVES_EACH_END` ranked pairs only,
  so that rendering stays cheap for 50 pairs (with a hold-out, the stored equity curve, and so
  the chart, covers the in-sample part);
- the total return of every ranked pair beside its buy-and-hold return;
- the run's parameters, data range and, when `run_info["cost"]` is present, its cost summary.

`run_info` is a plain dict: the run plan's fields (`window`, `windows`, `fee_bps`,
`lookback_days`, `holdout_days`, `rank_by`, `rank_on`, `start`, `end`, `pairs`, ...) plus
`dag_id`, `run_id`, `data_url` (the candle store, for buy-and-hold; the curves are drawn without
it when absent), `title` and the optional `cost` (a dict such as `leaderboard.cost_summary()`,
or text; shown as given). Other scalar or list fields are listed with the parameters, so new
run parameters show up without a change here.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import math
from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from backtest.errors import BacktestError
from backtest.metrics import METRIC_NAMES
from backtest.params import HOUR_MS
from backtest.storage import read_bytes, resolve, write_bytes_atomic

log = logging.getLogger("backtest_airflow.report")

REPORT_FILE = "report.html"
CURVES_EACH_END = 3  # equity/drawdown charts for this many top and bottom pairs
MAX_PLOT_POINTS = 800  # per line; hourly curves are thinned to this (drawdowns keep their peaks)

PERCENT_COLUMNS = frozenset(
    ("total_return", "buy_hold_return", "excess_return", "cagr", "volatility", "max_drawdown", "win_rate", "exposure")
)
SIGNED_COLUMNS = frozenset(("total_return", "buy_hold_return", "excess_return", "cagr"))
RATIO_COLUMNS = frozenset(("sharpe", "sortino", "calmar"))
INTEGER_COLUMNS = frozenset(("rank", "trades", "bars", "gaps", "window_bars"))
LABELS = {
    "total_return": "return",
    "buy_hold_return": "buy & hold",
    "excess_return": "excess",
    "max_drawdown": "max DD",
    "win_rate": "win rate",
    "fee_bps": "fee (bps)",
    "oos_total_return": "OOS return",
    "oos_buy_hold_return": "OOS buy & hold",
    "oos_sharpe": "OOS sharpe",
    "oos_max_drawdown": "OOS max DD",
}
REPORT_COLUMNS = (
    "rank",
    "symbol",
    "status",
    "total_return",
    "buy_hold_return",
    "excess_return",
    "cagr",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "win_rate",
    "trades",
    "exposure",
)
COMPACT_COLUMNS = ("rank", "symbol", "status", "total_return", "buy_hold_return", "sharpe", "max_drawdown", "trades")
# Hold-out figures shown when the run has them (every oos_* column is in the Parquet/CSV files).
OOS_SHOWN = ("oos_total_return", "oos_buy_hold_return", "oos_sharpe", "oos_max_drawdown")
# Leaderboard columns that are the same for every row of a run (shown once, under "Data"), or
# bookkeeping; `window` and `fee_bps` become table columns when they differ between rows.
RUN_LEVEL_COLUMNS = frozenset(
    ("synthetic", "data_source", "start", "end", "first_bar", "last_bar", "window", "fee_bps", "best", "split")
)
HIDDEN_COLUMNS = frozenset(("window_bars", "bars", "gaps", "volatility", *(f"oos_{name}" for name in METRIC_NAMES)))
# run_info fields that are not parameters (or are shown elsewhere).
NOT_PARAMETERS = frozenset(
    ("dag_id", "run_id", "title", "cost", "pairs", "chunks", "results_url", "data_url", "start", "end", "synthetic")
)
PARAMETER_ORDER = (
    "window",
    "windows",
    "window_bars",
    "max_window_bars",
    "fee_bps",
    "lookback_days",
    "holdout_days",
    "rank_by",
    "rank_on",
    "allow_failed_pairs",
    "history_days",
)


STYLE = """
:root { color-scheme: light; --fg: #1d2330; --muted: #5b6475; --line: #d8dde6; --bg: #f6f7f9;
  --pos: #0a7a3d; --neg: #b3261e; --warn-bg: #fff4ce; --warn-fg: #6a4a00; --bad-bg: #fde7e7; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 17px; margin: 28px 0 10px; }
h3 { font-size: 15px; margin: 0 0 6px; }
.muted { color: var(--muted); } code { font-size: 12.5px; }
.banner { padding: 12px 16px; border-radius: 6px; font-weight: 600; margin: 12px 0; }
.banner.synthetic { background: var(--warn-bg); color: var(--warn-fg); border: 2px solid #e0b400; font-size: 16px; }
.banner.failed { background: var(--bad-bg); color: var(--neg); border: 1px solid #f0b4b0; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 130px; }
.card b { display: block; font-size: 18px; }
.card span { color: var(--muted); font-size: 12px; }
.panel { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px; overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 7px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
table.leaderboard { font-size: 13px; }
th { background: #eef1f5; position: sticky; top: 0; }
th.text, td.text { text-align: left; }
table.sortable th button { all: unset; cursor: pointer; font-weight: 600; }
table.sortable th button:focus-visible { outline: 2px solid #3b6fd8; }
th[aria-sort=ascending] button::after { content: " \\25B2"; font-size: 10px; }
th[aria-sort=descending] button::after { content: " \\25BC"; font-size: 10px; }
tr.not-ok td { background: var(--bad-bg); }
td.pos { color: var(--pos); } td.neg { color: var(--neg); }
td.status-ok { color: var(--pos); }
td.status-bad { color: var(--neg); white-space: normal; text-align: left; min-width: 12em; }
table.kv th { text-align: left; width: 34%; background: none; position: static; font-weight: 600; }
table.kv td { text-align: left; white-space: normal; overflow-wrap: anywhere; }
figure { margin: 0 0 14px; background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px; }
figure svg { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 14px; }
pre { white-space: pre-wrap; margin: 0; }
"""

# Sorts any `table.sortable` by the clicked column: numbers by value (cells' data-value), text
# alphabetically, empty cells last in both directions.
SORT_SCRIPT = """
(function () {
  function key(cell) {
    var v = cell.getAttribute("data-value");
    if (v === null || v === "") return null;
    var n = Number(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      var button = th.querySelector("button");
      if (!button) return;
      button.addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          if (x === null || y === null) return (x === null) - (y === null);
          var d = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
          return asc ? d : -d;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
})();
"""

# The only script a report or the Backtests page may run: CSP allows it by its hash, so a script
# written into a stored report by anyone else (or an inline event handler) does not run.
SCRIPT_HASH = "'sha256-" + base64.b64encode(hashlib.sha256(SORT_SCRIPT.encode()).digest()).decode() + "'"
CSP = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {SCRIPT_HASH}; base-uri 'none'; form-action 'none'"


# -- small helpers ----------------------------------------------------------------------------


MAX_ALL_ROWS = 5000  # a bigger sweep's every-row table stays in the Parquet/CSV files


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _missing(value: object) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists, dicts
        return False


def _truthy(value: object) -> bool:
    return not _missing(value) and bool(value)


def format_value(column: str, value: object) -> str:
    """A leaderboard value as the tables show it (percent, ratio, integer or text)."""
    if _missing(value):
        return ""
    column = column.removeprefix("oos_")
    if column in PERCENT_COLUMNS:
        return f"{float(value):+.2%}" if column in SIGNED_COLUMNS else f"{float(value):.2%}"
    if column in RATIO_COLUMNS:
        return f"{float(value):.2f}"
    if column in INTEGER_COLUMNS:
        return f"{int(value):,}"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def _sort_value(value: object) -> str:
    if _missing(value):
        return ""
    if isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, int | float | np.integer | np.floating):
        return repr(float(value)) if math.isfinite(float(value)) else ""
    return str(value)


def is_synthetic(table: pd.DataFrame, run_info: dict | None = None) -> bool:
    """Whether any result of the run (or the run itself) is from synthetic candles."""
    if run_info and _truthy(run_info.get("synthetic")):
        return True
    flags = table.get("synthetic", [])
    sources = table.get("data_source", [])
    return any(_truthy(v) for v in flags) or any("synthetic" in str(v) for v in sources if not _missing(v))


def best_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per pair: its best window's (every row when the table has no `best` column)."""
    if "best" not in table:
        return table
    return table[table["best"].map(_truthy)]


def report_columns(table: pd.DataFrame, base: Iterable[str] = REPORT_COLUMNS, sweep: bool = False) -> list[str]:
    """The columns a leaderboard table shows: `base`; `window` (after `status`) in a sweep or when
    it differs between rows, `fee_bps` when it differs; hold-out figures when present; then any
    column this module does not know, so that new leaderboard columns are not hidden."""
    columns = [c for c in base if c in table]

    def varies(column: str) -> bool:
        return column in table and len({str(v) for v in table[column] if not _missing(v)}) > 1

    if "window" in table and (sweep or varies("window")) and "window" not in columns:
        columns.insert(columns.index("status") + 1 if "status" in columns else len(columns), "window")
    if varies("fee_bps") and "fee_bps" not in columns:
        columns.append("fee_bps")
    columns += [c for c in OOS_SHOWN if c in table and table[c].notna().any() and c not in columns]
    known = set(REPORT_COLUMNS) | RUN_LEVEL_COLUMNS | HIDDEN_COLUMNS
    columns += [c for c in table.columns if c not in columns and c not in known]
    return columns


def leaderboard_table(table: pd.DataFrame, columns: Iterable[str] | None = None, table_id: str = "") -> str:
    """The leaderboard as a sortable HTML table (every value escaped)."""
    columns = list(columns) if columns is not None else report_columns(table)
    numeric = {column: _numeric(table, column) for column in columns}  # once per column, not per cell
    head = []
    for column in columns:
        css = "text" if column in ("symbol", "status") or not numeric[column] else ""
        head.append(
            f'<th scope="col" class="{css}"><button type="button">{esc(LABELS.get(column, column))}</button></th>'
        )
    rows = []
    for record in table.to_dict("records"):
        status = str(record.get("status") or "")
        cells = []
        for column in columns:
            value = record.get(column)
            classes = []
            if column == "status":
                classes += ["text", "status-ok" if status == "ok" else "status-bad"]
            elif column == "symbol" or not numeric[column]:
                classes.append("text")
            elif column.removeprefix("oos_") in SIGNED_COLUMNS and not _missing(value):
                classes.append("pos" if float(value) > 0 else "neg" if float(value) < 0 else "")
            cells.append(
                f'<td class="{" ".join(c for c in classes if c)}" data-value="{esc(_sort_value(value))}">'
                f"{esc(format_value(column, value))}</td>"
            )
        row_class = "" if status == "ok" else ' class="not-ok"'
        rows.append(f'<tr{row_class} data-symbol="{esc(record.get("symbol"))}">{"".join(cells)}</tr>')
    id_attr = f' id="{esc(table_id)}"' if table_id else ""
    return (
        f'<table class="sortable leaderboard"{id_attr}><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _numeric(table: pd.DataFrame, column: str) -> bool:
    base = column.removeprefix("oos_")
    if base in PERCENT_COLUMNS or base in RATIO_COLUMNS or base in INTEGER_COLUMNS:
        return True
    if column not in table:
        return False
    values = [v for v in table[column] if not _missing(v)]
    return bool(values) and all(isinstance(v, int | float | np.integer | np.floating) for v in values)


def kv_table(items: Iterable[tuple[str, object]]) -> str:
    rows = "".join(f'<tr><th scope="row">{esc(k)}</th><td>{esc(_plain(v))}</td></tr>' for k, v in items)
    return f'<table class="kv">{rows}</table>'


def _plain(value: object) -> str:
    if isinstance(value, dict) and all(isinstance(v, str | int | float | bool) for v in value.values()):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, dict | list | tuple):
        if isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
            return ", ".join(str(v) for v in value)
        return json.dumps(value, indent=1, sort_keys=True, default=str)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


# -- data for the charts ----------------------------------------------------------------------


def shown_pairs(table: pd.DataFrame, each_end: int = CURVES_EACH_END) -> list[tuple[str, str]]:
    """(symbol, 'top' | 'bottom') for the ranked pairs that get curves, best first, no repeats."""
    ranked = table[(table["status"] == "ok") & table["rank"].notna()].sort_values("rank")
    symbols = ranked["symbol"].tolist()
    top = symbols[:each_end]
    bottom = [s for s in symbols[-each_end:] if s not in top] if each_end else []
    return [(s, "top") for s in top] + [(s, "bottom") for s in bottom]


def load_equity(results_url: str, symbol: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(open times as datetime64[ms], equity) from `{symbol}.equity.parquet`, or None when missing."""
    data = read_bytes(resolve(results_url).join(f"{symbol}.equity.parquet"))
    if not data:
        return None
    table = pq.read_table(pa.BufferReader(data), columns=["open_time", "equity"], use_threads=False)  # arrow#34314
    times = table.column("open_time").cast(pa.timestamp("ms")).to_numpy()
    equity = table.column("equity").to_numpy()
    return (times, equity) if len(times) else None


def load_buy_hold(data_url: str | None, symbol: str, times: np.ndarray) -> np.ndarray | None:
    """Buy-and-hold growth (close / first close) at the equity curve's bars, from the candle store."""
    if not data_url or not len(times):
        return None
    from backtest.store import CandleStore

    open_ms = times.astype("datetime64[ms]").astype(np.int64)
    try:
        candles = CandleStore(data_url).read(symbol, int(open_ms[0]), int(open_ms[-1]) + HOUR_MS).candles
    except (BacktestError, OSError) as exc:
        log.warning("no buy-and-hold curve for %s: %s", symbol, exc)
        return None
    index = np.searchsorted(candles.open_time, open_ms)
    if (index >= len(candles)).any() or (candles.open_time[np.minimum(index, len(candles) - 1)] != open_ms).any():
        log.warning("no buy-and-hold curve for %s: stored candles do not match the equity curve's bars", symbol)
        return None
    closes = candles.close[index]
    return closes / closes[0]


def drawdown(curve: np.ndarray) -> np.ndarray:
    """1 - E_t / max_{s<=t} E_s (positive fractions), as in backtest.metrics."""
    return 1.0 - curve / np.maximum.accumulate(curve)


def thin_index(n: int, limit: int = MAX_PLOT_POINTS) -> np.ndarray:
    """Indices of at most ~limit evenly spaced points, always keeping the first and the last."""
    if n <= limit:
        return np.arange(n)
    index = np.arange(0, n, math.ceil(n / limit))
    return index if index[-1] == n - 1 else np.append(index, n - 1)


def bucket_max(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Max of each bucket [index[i], index[i+1]) so that thinning keeps every drawdown's depth."""
    return np.maximum.reduceat(values, index) if len(index) < len(values) else values


# -- charts ------------------------------------------------------------------------------------

STRATEGY_COLOR = "#1f5fbf"
BUY_HOLD_COLOR = "#9a9a9a"


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return matplotlib, Figure


def figure_svg(fig, salt: str, label: str) -> str:
    """A matplotlib figure as an inline <svg> element (no XML prolog, text kept as text)."""
    matplotlib, _ = _mpl()
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    return svg.replace("<svg", f'<svg role="img" aria-label="{esc(label)}"', 1)


def pair_chart(symbol: str, row: dict, times: np.ndarray, equity: np.ndarray, buy_hold: np.ndarray | None) -> str:
    """Equity vs buy-and-hold (top) and their drawdowns (bottom) for one pair, as SVG."""
    _, Figure = _mpl()
    import matplotlib.dates as mdates
    from matplotlib.ticker import PercentFormatter

    fig = Figure(figsize=(8.6, 4.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2.3, 1])
    index = thin_index(len(times))
    x = times[index]
    top.plot(x, equity[index], color=STRATEGY_COLOR, linewidth=1.3, label="strategy")
    dd = drawdown(equity)
    bottom.fill_between(x, -bucket_max(dd, index), 0, color=STRATEGY_COLOR, alpha=0.35, linewidth=0, label="strategy")
    if buy_hold is not None:
        top.plot(x, buy_hold[index], color=BUY_HOLD_COLOR, linewidth=1.1, label="buy & hold")
        bottom.plot(x, -bucket_max(drawdown(buy_hold), index), color=BUY_HOLD_COLOR, linewidth=0.9, label="buy & hold")
    top.axhline(1.0, color="#444", linewidth=0.6, linestyle=":")
    top.set_ylabel("growth of 1")
    top.legend(loc="best", frameon=True, framealpha=0.85, edgecolor="none", fontsize=9)
    bottom.set_ylabel("drawdown")
    bottom.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    locator = mdates.AutoDateLocator(minticks=4, maxticks=9)
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    for ax in (top, bottom):
        ax.grid(True, color="#e3e6eb", linewidth=0.6)
        ax.spines[["top", "right"]].set_visible(False)
        ax.margins(x=0)
    rank = format_value("rank", row.get("rank"))
    title = f"#{rank} {symbol}: strategy {format_value('total_return', row.get('total_return'))}"
    title += f", buy & hold {format_value('buy_hold_return', row.get('buy_hold_return'))}"
    title += f", max drawdown {format_value('max_drawdown', row.get('max_drawdown'))}"
    top.set_title(title, loc="left", fontsize=11)
    return figure_svg(fig, f"pair-{symbol}", f"Equity and drawdown of {symbol} against buy and hold")


def returns_chart(ranked: pd.DataFrame) -> str:
    """Total return of every ranked pair beside its buy-and-hold return (horizontal bars), as SVG."""
    _, Figure = _mpl()
    from matplotlib.ticker import PercentFormatter

    symbols = ranked["symbol"].tolist()
    n = len(symbols)
    strategy = pd.to_numeric(ranked["total_return"], errors="coerce").fillna(0.0).to_numpy()
    buy_hold = pd.to_numeric(ranked["buy_hold_return"], errors="coerce").fillna(0.0).to_numpy()
    fig = Figure(figsize=(8.6, 1.3 + 0.32 * n), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)
    height = 0.4
    ax.barh(y - height / 2, strategy, height, color=STRATEGY_COLOR, label="strategy (total_return)")
    ax.barh(y + height / 2, buy_hold, height, color=BUY_HOLD_COLOR, label="buy & hold")
    ax.set_yticks(y, symbols, fontsize=9 if n <= 30 else 7)
    ax.invert_yaxis()  # rank 1 at the top
    ax.axvline(0, color="#444", linewidth=0.7)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(True, axis="x", color="#e3e6eb", linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_axisbelow(True)
    ax.margins(y=0.5 / max(n, 1))
    ax.tick_params(axis="x", labeltop=n > 20)  # a tall chart: the scale at both ends
    fig.legend(loc="outside upper right", ncols=2, frameon=False, fontsize=9)
    ax.set_title("Total return by pair, in rank order", loc="left", fontsize=11)
    return figure_svg(fig, "returns", "Total return of every ranked pair beside buy and hold")


# -- the page ----------------------------------------------------------------------------------


def build_report(results_url: str, leaderboard_df: pd.DataFrame, run_info: dict) -> str:
    """The run's report as one self-contained HTML page; see the module docstring."""
    table = leaderboard_df
    best = best_rows(table)
    title = str(run_info.get("title") or "Backtest report")
    ranked = best[(best["status"] == "ok") & best["rank"].notna()].sort_values("rank")
    not_ok = best[best["status"] != "ok"]
    synthetic = is_synthetic(table, run_info)
    sweep = len(table) > len(best) or len(run_info.get("windows") or []) > 1
    holdout = bool(run_info.get("holdout_days")) or ("split" in table and table["split"].notna().any())

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body><main>",
    ]
    if synthetic:
        parts.append(
            '<div class="banner synthetic" id="synthetic-banner" role="alert">SYNTHETIC DATA: these results come from '
            "generated candles, not market prices. Do not trade on them.</div>"
        )
    parts.append(f"<h1>{esc(title)}</h1>")
    # The run's as-of moment: it saw only the candles closed before it (README, "A run's date").
    ident = [("as of", run_info.get("end")), ("DAG", run_info.get("dag_id")), ("run", run_info.get("run_id"))]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(
        '<p class="muted">'
        + "".join(f"{esc(k)} <code>{esc(v)}</code> &middot; " for k, v in ident if v)
        + f"generated {esc(generated)}</p>"
    )
    parts.append(_summary_cards(best, ranked, run_info))
    if len(not_ok):
        parts.append(
            f'<div class="banner failed" role="alert">{len(not_ok)} of {len(best)} pair(s) failed or are stale; '
            'they are listed <a href="#failed">below</a> and not ranked.</div>'
        )

    parts.append('<h2 id="leaderboard">Leaderboard</h2>')
    columns = report_columns(best, sweep=sweep)
    parts.append(f'<div class="panel">{leaderboard_table(best, columns, "leaderboard-table")}</div>')
    note = "Click a column header to sort. Failed pairs are listed unranked."
    if sweep:
        note += " <code>window</code> is each pair's best window."
    if holdout:
        note += " OOS: the hold-out (out-of-sample) figures of that window."
    parts.append(f'<p class="muted">{note}</p>')
    if len(best) < len(table) <= MAX_ALL_ROWS:
        every = leaderboard_table(table, report_columns(table, sweep=True), "all-rows-table")
        parts.append(
            f"<details><summary>All {len(table)} (pair, window) rows</summary>"
            f'<div class="panel">{every}</div></details>'
        )
    elif len(table) > MAX_ALL_ROWS:
        parts.append(
            f'<p class="muted">All {len(table)} (pair, window) rows are in leaderboard.parquet and '
            f"leaderboard.csv (more than {MAX_ALL_ROWS} are not shown here).</p>"
        )

    if len(not_ok):
        rows = "".join(
            f'<tr><td class="text">{esc(r["symbol"])}</td><td class="status-bad">{esc(r["status"])}</td></tr>'
            for r in not_ok.to_dict("records")
        )
        parts.append(
            '<h2 id="failed">Failed pairs</h2><div class="panel"><table id="failed-pairs"><thead><tr>'
            f'<th class="text">symbol</th><th class="text">status</th></tr></thead><tbody>{rows}</tbody></table></div>'
        )

    parts.append('<h2 id="returns">Returns across pairs</h2>')
    if len(ranked):
        scope = "in-sample " if holdout else ""
        parts.append(
            f'<figure class="chart returns-chart">{returns_chart(ranked)}<figcaption>Strategy {scope}total return '
            "(blue) beside buy-and-hold (grey) over the same bars, per ranked pair, in rank order.</figcaption></figure>"
        )
    else:
        parts.append('<p class="muted">No pair was ranked.</p>')

    parts.append('<h2 id="curves">Equity and drawdown: top and bottom pairs</h2>')
    parts.append(_curves(results_url, best, run_info.get("data_url"), holdout))

    parts.append('<h2 id="parameters">Parameters and data</h2><div class="grid">')
    parts.append(f'<div class="panel"><h3>Parameters</h3>{kv_table(_parameters(run_info))}</div>')
    parts.append(f'<div class="panel"><h3>Data</h3>{kv_table(_data_range(table, run_info, synthetic))}</div></div>')

    cost = run_info.get("cost")
    if cost not in (None, "", {}):
        parts.append(f'<h2 id="cost">Cost</h2><div class="panel" id="cost-summary">{_cost_html(cost)}</div>')

    files = ", ".join(f"<code>{esc(n)}</code>" for n in ("leaderboard.parquet", "leaderboard.csv", REPORT_FILE))
    parts.append(
        f'<p class="muted">Files in <code>{esc(results_url)}</code>: {files}, and per pair a JSON result and '
        "an equity curve.</p>"
    )
    parts.append(f"</main><script>{SORT_SCRIPT}</script></body></html>\n")
    return "\n".join(parts)


def _summary_cards(best: pd.DataFrame, ranked: pd.DataFrame, run_info: dict) -> str:
    cards = [("pairs", str(len(best))), ("ranked", str(len(ranked))), ("failed", str(len(best) - len(ranked)))]
    if len(ranked):
        rank_by = str(run_info.get("rank_by") or "total_return")
        metric = f"oos_{rank_by}" if run_info.get("rank_on") == "out_of_sample" else rank_by
        top = ranked.iloc[0]
        if metric in ranked:
            cards.append((f"best by {metric}", f"{top['symbol']} {format_value(metric, top[metric])}"))
        returns = pd.to_numeric(ranked["total_return"], errors="coerce").dropna()
        if len(returns):
            cards.append(("median return", format_value("total_return", float(returns.median()))))
        if "excess_return" in ranked:
            excess = pd.to_numeric(ranked["excess_return"], errors="coerce").dropna()
            cards.append(("beat buy & hold", f"{int((excess > 0).sum())} of {len(excess)}"))
    body = "".join(f'<div class="card"><b>{esc(v)}</b><span>{esc(k)}</span></div>' for k, v in cards)
    return f'<div class="cards">{body}</div>'


def _curves(results_url: str, best: pd.DataFrame, data_url: str | None, holdout: bool) -> str:
    shown = shown_pairs(best)
    if not shown:
        return '<p class="muted">No ranked pair: nothing to draw.</p>'
    rows = {r["symbol"]: r for r in best.to_dict("records")}
    figures = []
    for symbol, end in shown:
        curve = load_equity(results_url, symbol)
        if curve is None:
            figures.append(f'<p class="muted">{esc(symbol)}: no equity curve stored.</p>')
            continue
        times, equity = curve
        buy_hold = load_buy_hold(data_url, symbol, times)
        notes = []
        if holdout:
            notes.append("In-sample part of the window (the equity curve is stored for it only).")
        if buy_hold is None:
            notes.append("Buy-and-hold unavailable: the candles could not be read.")
        row = rows[symbol]
        window = f" (window {row['window']})" if not _missing(row.get("window")) else ""
        figures.append(
            f'<figure class="chart pair-chart" data-symbol="{esc(symbol)}" data-end="{end}">'
            f"{pair_chart(symbol, row, times, equity, buy_hold)}"
            f"<figcaption>{'Top' if end == 'top' else 'Bottom'} pair {esc(symbol)}{esc(window)}: growth of 1 for the "
            "strategy (blue) and buy-and-hold (grey, close / first close); below, their drawdowns. "
            f"{esc(' '.join(notes))}</figcaption></figure>"
        )
    return "".join(figures)


def _parameters(run_info: dict) -> list[tuple[str, object]]:
    keys = [k for k in PARAMETER_ORDER if k in run_info]
    keys += sorted(k for k in run_info if k not in keys and k not in NOT_PARAMETERS)
    if run_info.get("windows") in ([run_info.get("window")], (run_info.get("window"),)):
        keys.remove("windows")  # one window: said once
    items: list[tuple[str, object]] = [(k, run_info[k]) for k in keys if not isinstance(run_info[k], dict)]
    if isinstance(run_info.get("chunks"), list):
        items.append(("jobs", len(run_info["chunks"])))
    pairs = run_info.get("pairs")
    if isinstance(pairs, list | tuple):
        items.append((f"pairs ({len(pairs)})", ", ".join(map(str, pairs))))
    return items


def _data_range(table: pd.DataFrame, run_info: dict, synthetic: bool) -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    if run_info.get("start") or run_info.get("end"):
        items.append(("period", f"{run_info.get('start', '?')} to {run_info.get('end', '?')} (end exclusive)"))
    for column, label, pick in (("first_bar", "first candle", min), ("last_bar", "last candle", max)):
        values = [str(v) for v in table[column] if not _missing(v)] if column in table else []
        if values:
            items.append((label, pick(values)))
    if "split" in table:
        splits = sorted({str(v) for v in table["split"] if not _missing(v)})
        if splits:
            items.append(("hold-out starts", ", ".join(splits)))
    if "bars" in table:
        bars = pd.to_numeric(table["bars"], errors="coerce").dropna()
        if len(bars):
            low, high = int(bars.min()), int(bars.max())
            items.append(("bars per pair", f"{low:,}" if low == high else f"{low:,} to {high:,}"))
    if "gaps" in table:
        gaps = pd.to_numeric(best_rows(table)["gaps"], errors="coerce").dropna()
        items.append(("missing hours (gaps), all pairs", f"{int(gaps.sum()):,}"))
    sources = sorted({str(v) for v in table["data_source"] if not _missing(v)}) if "data_source" in table else []
    items.append(("data source", ", ".join(sources) or "unknown"))
    items.append(("synthetic", "YES: generated candles, not market data" if synthetic else "no"))
    if run_info.get("data_url"):
        items.append(("candle store", run_info["data_url"]))
    return items


def _cost_html(cost: object) -> str:
    if not isinstance(cost, dict):
        return f"<pre>{esc(_plain(cost))}</pre>"
    text = cost.get("text")
    head = f"<p><b>{esc(text)}</b></p>" if text else ""
    html = head + kv_table((k, v) for k, v in cost.items() if k not in ("text", "per_job"))
    jobs = cost.get("per_job") or []
    if jobs:
        columns = ["job_name", "pairs", "wall_seconds", "vcpu", "memory_mib", "billed_seconds", "cost_on_demand_usd"]
        head_row = "".join(f'<th class="text">{esc(c)}</th>' for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(_plain(job.get(c)))}</td>" for c in columns) + "</tr>" for job in jobs
        )
        html += (
            f"<details><summary>Per job ({len(jobs)})</summary><table><thead><tr>{head_row}</tr></thead>"
            f"<tbody>{body}</tbody></table></details>"
        )
    return html


def write(leaderboard_df: pd.DataFrame, results_url: str, run_info: dict) -> str:
    """Build the report and store it atomically as `report.html` in the results folder; returns its URL."""
    page = build_report(results_url, leaderboard_df, run_info)
    return write_html(results_url, page)


def write_html(results_url: str, page: str) -> str:
    """Store a built page as the run's `report.html` (atomic on S3 and on disk); returns its URL."""
    loc = resolve(results_url).join(REPORT_FILE)
    write_bytes_atomic(loc, page.encode("utf-8"))
    return loc.url
