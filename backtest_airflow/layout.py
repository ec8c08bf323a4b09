"""Names and places shared by the DAG, its tasks, the UI, the alerts, the demo and the tests.

A run's results folder (the job writes the per-pair files, `rank` the rest):

    {store}/results/crypto_backtest_daily/date=<as-of date>/run=<run folder>/
        strategy=<label>/                                            (one folder per strategy entry of the run)
            {symbol}.json  {symbol}.equity.parquet  {symbol}.error.json  _jobs/<job>.json   (backtest.job)
        leaderboard.parquet  leaderboard.csv  leaderboard.md  grid.parquet  portfolio.parquet  summary.json  report.html  (rank)
        _latest.json   (rank, at the end of a successful run: which run of the date is the one to compare with)

Athena reads every object below a table's location, so its tables (infra/backtest-stack.yaml) read
copies in folders of their own, beside the date folders (`table_copy_url`, `table_folder`):

    {store}/results/crypto_backtest_daily/tables/<table>/date=<as-of date>/
        run=<run folder>.parquet   (leaderboard, grid: rank, a fixed schema and a `run` column)
        latest.json                (latest_run: the date's `_latest.json` record)
"""

from __future__ import annotations

import re
from datetime import datetime

DAG_ID = "crypto_backtest_daily"
RESULTS_DIR = "results"
LEADERBOARD_PARQUET = "leaderboard.parquet"
LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_MD = "leaderboard.md"
SUMMARY_JSON = "summary.json"
GRID_PARQUET = "grid.parquet"  # every (pair, strategy, combination) row of a run
PORTFOLIO_PARQUET = "portfolio.parquet"  # each label's equal-weight curves (report.portfolio)
GRID_PARAM_PREFIX = "param_"  # its parameter columns: param_<key of the result's params>, e.g. param_fast_bars
WF_IS_PREFIX = "wf_is_"  # the leaderboard's walk-forward in-sample columns: wf_is_<metric>, the folds' mean
REPORT_HTML = "report.html"
LATEST_JSON = "_latest.json"  # date=<date>/_latest.json: the date's latest successful run (report.history)
RANK_FILES = (LEADERBOARD_PARQUET, LEADERBOARD_CSV, LEADERBOARD_MD, REPORT_HTML)  # what a finished run shows
TABLES_DIR = "tables"  # the Athena tables' copies (see the module docstring)
LEADERBOARD_TABLE, GRID_TABLE, LATEST_TABLE = "leaderboard", "grid", "latest_run"
LATEST_TABLE_FILE = "latest.json"  # a name Athena reads (it skips names starting with "_" or ".")
# `date=` and `run=` folder names, as the UI checks them before they reach a storage key.
DATE_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
RUN_PATTERN = re.compile(r"[A-Za-z0-9_=-][A-Za-z0-9._=-]{0,249}")  # run_folder_name's output, no "." or ".."


def run_folder_name(run_id: str) -> str:
    """A storage-key-safe, deterministic folder name for a DAG run id."""
    return re.sub(r"[^A-Za-z0-9._=-]", "-", run_id)


def results_root(data_url: str, dag_id: str = DAG_ID) -> str:
    """The folder holding every run's results folder of a DAG."""
    return "/".join([data_url.rstrip("/"), RESULTS_DIR, dag_id])


def results_url(data_url: str, as_of: datetime | str, run_id: str, dag_id: str = DAG_ID) -> str:
    """A run's results folder; `as_of` is its as-of moment or that moment's date (YYYY-MM-DD)."""
    date = as_of if isinstance(as_of, str) else f"{as_of:%Y-%m-%d}"
    return "/".join([results_root(data_url, dag_id), f"date={date}", f"run={run_folder_name(run_id)}"])


def strategy_results_url(results_url: str, strategy: str) -> str:
    """The folder of one strategy's per-pair results inside a run's results folder."""
    return f"{results_url.rstrip('/')}/strategy={strategy}"


def label_of(entry: dict) -> str:
    """A plan strategy's label: its `strategy=<label>` folder and its leaderboard rows' `strategy`
    (the strategy's name unless the entry gives one; a plan from before labels: its name)."""
    return entry.get("label", entry["name"])


def table_folder(data_url: str, table: str, date: str, dag_id: str = DAG_ID) -> str:
    """One date's partition folder of an Athena table's copies."""
    return "/".join([results_root(data_url, dag_id), TABLES_DIR, table, f"date={date}"])


def table_copy_url(results_url: str, table: str) -> str | None:
    """Where `rank` writes a run's copy for the Athena table `table`: its date's partition folder,
    one file per run; None when `results_url` is not a run's results folder (`results_url`'s
    .../date=<date>/run=<run>)."""
    parts = results_url.rstrip("/").rsplit("/", 2)
    if len(parts) < 3 or not (parts[1].startswith("date=") and parts[2].startswith("run=")):
        return None
    root, date, run = parts
    return "/".join([root, TABLES_DIR, table, date, f"{run}.parquet"])


def run_of(results_url: str) -> str:
    """A run's folder name (`run_folder_name`) from its results folder's URL."""
    return results_url.rstrip("/").rsplit("/", 1)[1].removeprefix("run=")
