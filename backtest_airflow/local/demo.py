"""`make demo`: the whole daily DAG once, locally, on the embedded default (no AWS, no internet).

Local store, synthetic candles (labelled as such), local runner, the configured pairs, one
logical date; prints the leaderboard and the paths of its files. Runs under `dag.test()` with
its own AIRFLOW_HOME and SQLite metadata DB (the Makefile sets the environment).

`make demo DEMO_ARGS='...'` passes its options in the environment variable DEMO_ARGS, split by
`split_args` (not by a shell), so a JSON value needs no quotes of its own:
`make demo DEMO_ARGS='--strategies [{"name": "sma_cross"}, {"name": "rsi_reversion"}]'`.
Params the run's `plan` would refuse (an unknown strategy, a bad value) are refused before
anything starts, with plan's one message (exit 2). `--days N` runs N consecutive logical dates
ending at `--date`, oldest first (what a backfill of the last N days does), so the last run's
report has N - 1 earlier runs to compare with (`make demo DEMO_ARGS='--days 5'`). `--param NAME=VALUE`
sets any other param of the trigger form: `--param holdout_days=30 --param rank_on=out_of_sample`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
import warnings
from datetime import date as Date
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from backtest.errors import InputError
from backtest_airflow import layout

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun


def quiet_third_party_warnings() -> None:
    """Deprecation notices of libraries (pathspec, starlette, SQLAlchemy) are noise in the demo's output."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    warnings.filterwarnings("ignore", message="Multiple rows returned with uselist=False")


class DagImportError(RuntimeError):
    """The DAG folder did not import cleanly."""


_JSON_WORD = re.compile(r"(?:--[A-Za-z][\w-]*=|[A-Za-z_]\w*=)?[\[{]")  # also --param NAME=[...]


def split_args(text: str) -> list[str]:
    """DEMO_ARGS as demo's options: words split at spaces as a shell would (`'...'` and `"..."`
    quote, a backslash escapes), except that a JSON list or object, from a `[` or `{` that begins
    a word (or follows `--option=` or `NAME=`) to its matching bracket, is one word however it is spaced. So both
    `--strategies [{"name": "sma_cross"}]` and the shell's `--strategies '[{"name": "sma_cross"}]'`
    give `--strategies` and the JSON. InputError for an unclosed quote or JSON that is not valid."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        json_word = _JSON_WORD.match(text, i)  # [..., {..., or --option=[... / --option={...
        if json_word:
            start = json_word.end() - 1
            try:
                _, end = json.JSONDecoder().raw_decode(text, start)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"DEMO_ARGS: not valid JSON: {exc.msg} at character {exc.pos + 1} of {text!r}"
                ) from None
            if end < n and not text[end].isspace():
                raise InputError(f"DEMO_ARGS: a space must follow the JSON that ends at character {end}")
            words.append(text[i:end])
            i = end
            continue
        word, quote = [], None
        while i < n and (quote or not text[i].isspace()):
            char = text[i]
            if char == "\\" and quote != "'" and i + 1 < n:
                i += 1
                char = text[i]
            elif char == quote:
                quote, char = None, ""
            elif char in "'\"" and quote is None:
                quote, char = char, ""
            word.append(char)
            i += 1
        if quote:
            raise InputError(f"DEMO_ARGS: a {quote} quote is not closed")
        words.append("".join(word))
    return words


def check_params(conf: dict, date: str) -> None:
    """Refuse, with the one message of the run's `plan` (InputError), params it would refuse: an
    unknown strategy or parameter, a bad value, ... (before the metadata DB and the DAG start)."""
    from backtest_airflow import planning
    from backtest_airflow.settings import pairs_from_file

    end = datetime.fromisoformat(date + "T00:00:00+00:00")
    data_url = os.environ.get("BACKTEST_DATA_URL", "store")
    planning.make_plan({"pairs": pairs_from_file(), **conf}, data_url, layout.DAG_ID, "demo", end)


def run_demo(
    date: str = "2026-11-01",
    pairs: int = 0,
    window: str | None = None,
    lookback_days: int | None = None,
    strategies: list[dict] | None = None,
    walk_forward: str | None = None,
    migrate: bool = True,
    params: dict | None = None,
) -> tuple[DagRun, Path, float]:
    """One run of the daily DAG under dag.test() in this process, with the environment's settings
    (AIRFLOW_HOME, BACKTEST_DATA_URL, ...): (the DAG run, its results folder, seconds dag.test took).

    Migrates the metadata DB first; `pairs` > 0 backtests that many synthetic pairs instead of the
    configured list; `window`, `lookback_days`, `strategies` and `walk_forward` override those params,
    `params` any (holdout_days, rank_on, fee_bps, ...). Params `plan` would refuse raise its InputError
    first (`check_params`)."""
    overrides = {
        "pairs": [f"SYN{i:04d}USDT" for i in range(pairs)],
        "window": window,
        "lookback_days": lookback_days,
        "strategies": strategies,
        "walk_forward": walk_forward,
    }
    conf = {**(params or {}), **{name: value for name, value in overrides.items() if value}}  # the params given
    check_params(conf, date)
    if migrate:
        airflow = Path(sys.executable).with_name("airflow")
        subprocess.run([str(airflow), "db", "migrate"], check=True, stdout=subprocess.DEVNULL)

    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import ParamValidationError

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise DagImportError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag(layout.DAG_ID)
    quiet_third_party_warnings()  # after Airflow's imports, which install filters of their own
    # dag.test() runs every task whatever its pool, and this home has no API server to ask: the
    # pool check (backtest_airflow.pools) would only warn that it cannot check
    logging.getLogger("backtest_airflow.pools").setLevel(logging.ERROR)
    began = time.perf_counter()
    logical_date = datetime.fromisoformat(date + "T00:00:00+00:00")
    try:
        dag_run = dag.test(logical_date=logical_date, run_conf=conf)
    except ParamValidationError as exc:  # the form's check (plan's came first): its first line, not jsonschema's detail
        raise InputError(str(exc).strip().splitlines()[0]) from None
    elapsed = time.perf_counter() - began
    return dag_run, Path(layout.results_url(os.environ["BACKTEST_DATA_URL"], date, dag_run.run_id)), elapsed


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text}") from None


def _param(text: str) -> tuple[str, object]:
    """`NAME=VALUE`: VALUE as JSON when it is JSON (30, true, "x"), else as the text itself."""
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"not NAME=VALUE: {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _date(text: str) -> str:
    try:
        return Date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def print_changes(folder: Path, date: str) -> None:
    """The report's first section in one line or a few: the signal changes since the previous run."""
    from backtest_airflow.report import history
    from backtest_airflow.settings import load_settings

    previous = history.previous_run(load_settings().data_url, date)
    if previous is None:
        return
    board = history.read_leaderboard(str(folder))
    signals = history.signal_changes(board) if board is not None else []
    print(f"\nWhat changed since {previous.date}: {len(signals)} signal change(s) (the report's first section)")
    for change in signals:
        print(f"  {history.signal_text(change)}")


def main(argv: list[str] | None = None) -> int:
    """Run the demo with `argv` (default: the command line's) and DEMO_ARGS's options; exit 2 with
    one line for params the run would refuse."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--date", type=_date, default="2026-11-01", help="logical date of the run (default 2026-11-01)")
    parser.add_argument("--pairs", type=int, default=0, help="use this many synthetic pairs instead of the list")
    parser.add_argument("--window", help="override the window param (e.g. 15d, or a sweep 1d:60d:1d)")
    parser.add_argument("--lookback-days", type=int, help="override the lookback_days param")
    parser.add_argument(
        "--strategies",
        type=_json,
        help='override the strategies param, as JSON: \'[{"name": "sma_cross", "params": {"fast": "1d,2d"}}]\'',
    )
    parser.add_argument("--walk-forward", help="set the walk_forward param, e.g. 60d:20d or 60d:20d:anchored")
    parser.add_argument("--days", type=int, default=1, help="run this many consecutive dates ending at --date (1-60)")
    parser.add_argument(
        "--param",
        type=_param,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set any param of the trigger form (docs/configuration.md), e.g. --param holdout_days=30 "
        "--param rank_on=out_of_sample; repeatable",
    )
    try:
        words = sys.argv[1:] if argv is None else argv
        args = parser.parse_args([*words, *split_args(os.environ.get("DEMO_ARGS", ""))])
        if not 1 <= args.days <= 60:
            raise InputError(f"--days must be 1 to 60, not {args.days}")
        last = Date.fromisoformat(args.date)
        for back in range(args.days - 1, -1, -1):
            day = (last - timedelta(days=back)).isoformat()
            dag_run, folder, elapsed = run_demo(
                day, args.pairs, args.window, args.lookback_days, args.strategies, args.walk_forward,
                migrate=back == args.days - 1, params=dict(args.param),
            )  # fmt: skip
            if back:
                print(f"DAG run {dag_run.run_id} ({day}): {dag_run.state} in {elapsed:.1f} s")
    except InputError as error:  # plan's one message, or the form's first line
        print(f"error: {error}", file=sys.stderr)
        return 2
    except DagImportError as error:
        print(error, file=sys.stderr)
        return 1

    print()
    if (folder / layout.LEADERBOARD_MD).exists():
        print((folder / layout.LEADERBOARD_MD).read_text())
        for name in layout.RANK_FILES:
            print(f"{name}: {folder / name}")
        print_changes(folder, day)
    else:
        print(f"no leaderboard was written (expected in {folder}): see the task errors above", file=sys.stderr)
    tasks = len(dag_run.get_task_instances())
    print(f"DAG run {dag_run.run_id}: {dag_run.state} in {elapsed:.1f} s, {tasks} task instances (SYNTHETIC data)")
    return 0 if dag_run.state == "success" else 1


if __name__ == "__main__":
    raise SystemExit(main())
