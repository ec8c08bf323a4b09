"""Day over day: each date's latest successful run (a pointer), the run before this one, what
changed since, and the history of the last runs, read from the leaderboards every run leaves.

The history is one dataset: every run's `leaderboard.parquet` under `date=<date>/run=<run>/`
(`layout.results_url`) plus, per date, `date=<date>/_latest.json` (`layout.LATEST_JSON`), which
`rank` writes atomically as the last step of a successful run. A failed run, or one still
running, never writes it, so it never shadows the good one; a re-run that succeeds replaces it
(the latest successful run wins); backfill days run in parallel write different dates' pointers.
Each pointer has a copy for Athena, `tables/latest_run/date=<date>/latest.json` (`layout.table_folder`).

- The previous run of a run with as-of date D: the pointer of the most recent date before D that
  has one (not necessarily D - 1: a run whose previous date is missing compares with the latest
  earlier one, and says which).
- Changes (`changes`), per (pair, strategy) row of this run's leaderboard against the previous
  run's: `rank_prev`, `rank_change` = rank_prev - rank (positive: moved up), `position_prev`,
  `params_prev` (the combination it then traded next), `metric_prev` and `metric_change` (the
  ranking metric, this run's minus the previous), and `change` (`new`: not in the previous run;
  `now failing`, `failing again`, `recovered`, or empty). Rows of the previous run missing from
  this one are `missing_pairs`.
- Settings changes (`settings_changes`): per strategy label in both runs, the run-wide settings
  whose values differ (`SETTING_COLUMNS`, the window's length in days, and a single combination's
  `params`): the previous figures are then not like for like, and the report says so first.
- History (`read_history`): the chosen columns of the leaderboards of the latest successful run of
  each of the last `runs` dates up to a date, one frame with a `date` column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from backtest.data.storage import list_dir, read_bytes, read_parquet_bytes, resolve, write_bytes_atomic
from backtest_airflow import layout

HISTORY_RUNS = 30  # the report's history: the last 30 runs
KEYS = ["symbol", "strategy"]
# What a run was asked to do, per leaderboard row: when one differs between two runs, a change of
# rank or metric may come from the settings, not from the market.
SETTING_COLUMNS = ("fee_bps", "slippage_bps", "borrow_bps_per_day", "size", "direction", "sl", "tp", "trail",
                   "selection", "select_by", "combinations")  # fmt: skip


@dataclass(frozen=True)
class RunRef:
    """One date's latest successful run (its pointer)."""

    date: str
    run: str  # the run folder's name (`layout.run_folder_name`)
    run_id: str
    results_url: str
    written_at: str


def _date_folder(data_url: str, date: str) -> str:
    return "/".join([layout.results_root(data_url), f"date={date}"])


def write_pointer(data_url: str, date: str, run_id: str) -> str:
    """Mark the run `run_id` as date `date`'s latest successful run (atomically); returns its URL."""
    results_url = layout.results_url(data_url, date, run_id)
    record = {
        "date": date,
        "run": layout.run_folder_name(run_id),
        "run_id": run_id,
        "results_url": results_url,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    data = (json.dumps(record) + "\n").encode()
    loc = resolve(_date_folder(data_url, date)).join(layout.LATEST_JSON)
    write_bytes_atomic(loc, data)
    # the same record where the Athena table `latest_run` reads it (it skips names starting with "_")
    write_bytes_atomic(
        resolve(layout.table_folder(data_url, layout.LATEST_TABLE, date)).join(layout.LATEST_TABLE_FILE), data
    )
    return loc.url


def read_pointer(data_url: str, date: str) -> RunRef | None:
    data = read_bytes(resolve(_date_folder(data_url, date)).join(layout.LATEST_JSON))
    if not data:
        return None
    record = json.loads(data)
    return RunRef(record["date"], record["run"], record["run_id"], record["results_url"], record["written_at"])


def dates(data_url: str) -> list[str]:
    """Every as-of date with a results folder, oldest first."""
    names = list_dir(resolve(layout.results_root(data_url)))
    found = [name.removeprefix("date=") for name in names if name.startswith("date=")]
    return sorted(d for d in found if layout.DATE_PATTERN.fullmatch(d))


def latest_runs(data_url: str, until: str, runs: int = HISTORY_RUNS, before: bool = False) -> list[RunRef]:
    """The pointers of the last `runs` dates up to `until` (before it, with `before`), oldest first."""
    chosen = []
    for date in reversed(dates(data_url)):
        if date > until or (before and date == until):
            continue
        ref = read_pointer(data_url, date)
        if ref is not None:
            chosen.append(ref)
            if len(chosen) == runs:
                break
    return chosen[::-1]


def previous_run(data_url: str, date: str) -> RunRef | None:
    """The latest successful run of the most recent date before `date` (None: the first run)."""
    runs = latest_runs(data_url, date, runs=1, before=True)
    return runs[0] if runs else None


def read_leaderboard(results_url: str, columns: list[str] | None = None) -> pd.DataFrame | None:
    """A run's leaderboard (`columns` of it that exist), or None when it has none."""
    data = read_bytes(resolve(results_url).join(layout.LEADERBOARD_PARQUET))
    if not data:
        return None
    if columns is not None:
        names = set(pq.ParquetFile(pa.BufferReader(data)).schema_arrow.names)
        columns = [c for c in columns if c in names]
    return read_parquet_bytes(data, columns=columns).to_pandas()


def read_history(
    data_url: str, until: str, columns: list[str], runs: int = HISTORY_RUNS, before: bool = False
) -> pd.DataFrame:
    """`columns` of the leaderboards of the last `runs` dates' latest successful runs up to
    `until` (before it, with `before`), with `date` and `run` columns (empty without any)."""
    frames = []
    for ref in latest_runs(data_url, until, runs, before):
        board = read_leaderboard(ref.results_url, columns)
        if board is not None:
            frames.append(board.assign(date=ref.date, run=ref.run))
    if not frames:
        return pd.DataFrame(columns=[*columns, "date", "run"])
    return pd.concat(frames, ignore_index=True)


def _failing(status: object) -> bool:
    return isinstance(status, str) and status != "ok"


def changes(current: pd.DataFrame, previous: pd.DataFrame | None, metric: str) -> tuple[pd.DataFrame, list[dict]]:
    """This run's leaderboard with the change columns (see the module docstring), and the
    (pair, strategy) rows of the previous run that this one lacks."""
    board = current.copy()
    columns = ("rank_prev", "rank_change", "position_prev", "params_prev", "metric_prev", "metric_change", "change")
    if previous is None:
        for column in columns:
            board[column] = None
        return board, []
    wanted = [c for c in ("symbol", "strategy", "rank", "position_now", "next_params", "params", metric, "status")
              if c in previous]  # fmt: skip
    prev = previous[wanted].drop_duplicates(KEYS).set_index(KEYS)
    renamed = prev.rename(columns=lambda c: f"{c}_p").reset_index()
    joined = board[KEYS].merge(renamed, on=KEYS, how="left").set_index(board.index)  # board's rows, in order
    board["rank_prev"] = joined["rank_p"].astype("Int64") if "rank_p" in joined else None
    board["rank_change"] = (board["rank_prev"] - board["rank"].astype("Int64")).astype("Int64")
    board["position_prev"] = joined.get("position_now_p")
    params_prev = joined.get("next_params_p")
    if params_prev is None and "params_p" in joined:
        params_prev = joined["params_p"]
    board["params_prev"] = params_prev
    board["metric_prev"] = (
        pd.to_numeric(joined.get(f"{metric}_p"), errors="coerce") if f"{metric}_p" in joined else None
    )
    board["metric_change"] = pd.to_numeric(board.get(metric), errors="coerce") - board["metric_prev"]
    notes = []
    seen = set(prev.index)
    for key, status, before in zip(
        board[KEYS].itertuples(index=False), board["status"], joined["status_p"], strict=True
    ):
        if tuple(key) not in seen:
            notes.append("new")
        elif _failing(status):
            notes.append("failing again" if _failing(before) else "now failing")
        else:
            notes.append("recovered" if _failing(before) else "")
    board["change"] = notes
    here = set(map(tuple, board[KEYS].itertuples(index=False)))
    missing = [{"symbol": s, "strategy": t} for s, t in prev.index if (s, t) not in here]
    return board, missing


def signal_changes(board: pd.DataFrame) -> list[dict]:
    """The rows whose position differs from the previous run's (both known): symbol, strategy,
    before, after, since (the new position's `position_since`), in leaderboard order."""
    if "position_prev" not in board:
        return []
    rows = board[board["position_prev"].notna() & board["position_now"].notna()]
    rows = rows[rows["position_prev"] != rows["position_now"]]
    return [
        {"symbol": r["symbol"], "strategy": r.get("strategy"), "before": r["position_prev"], "after": r["position_now"],
         "since": r.get("position_since")}
        for r in rows.to_dict("records")
    ]  # fmt: skip


def signal_text(change: dict) -> str:
    """`BTCUSDT sma_trend: flat → long since 2026-12-01T13:00:00Z`."""
    since = f" since {change['since']}" if change.get("since") else ""
    name = " ".join(str(v) for v in (change["symbol"], change.get("strategy")) if v)
    return f"{name}: {change['before']} → {change['after']}{since}"


def _values(board: pd.DataFrame, column: str) -> str:
    values = sorted({str(v) for v in board[column] if not _blank(v)})
    return ", ".join(values) if values else "none"


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # None or NaN


def _window_days(board: pd.DataFrame) -> pd.Series:
    span = pd.to_datetime(board["end"], utc=True) - pd.to_datetime(board["start"], utc=True)
    return (span.dt.total_seconds() / 86400).round(2).map(lambda d: f"{d:g}d")


def settings_changes(current: pd.DataFrame, previous: pd.DataFrame | None) -> list[str]:
    """Per strategy label in both runs, each setting whose values differ: `sma_trend: fee_bps 10.0 → 5.0`.

    Compared on the ok rows (a failed row has no settings of its own); a single combination's
    `params` count as a setting (a grid's chosen params are a result: `params_prev` says them).
    """
    if previous is None or "strategy" not in current or "strategy" not in previous:
        return []
    ok_now, ok_before = (b[b["status"] == "ok"] for b in (current, previous))
    found = []
    for label in sorted(set(ok_now["strategy"].dropna()) & set(ok_before["strategy"].dropna())):
        now, before = ok_now[ok_now["strategy"] == label].copy(), ok_before[ok_before["strategy"] == label].copy()
        columns = [c for c in SETTING_COLUMNS if c in now and c in before]
        if all(c in b for b in (now, before) for c in ("start", "end")):
            now["window"], before["window"] = _window_days(now), _window_days(before)
            columns.append("window")
        if all("combinations" in b and (b["combinations"] == 1).all() for b in (now, before)):
            columns.append("params")
        for column in columns:
            was, is_ = _values(before, column), _values(now, column)
            if was != is_:
                found.append(f"{label}: {column} {was} → {is_}")
    return found
