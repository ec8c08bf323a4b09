"""The Athena tables of infra/backtest-stack.yaml (Glue tables with partition projection) against
the files the project writes, so that the tables cannot drift from the files.

The files are real: synthetic candles refreshed into a store, the jobs' backtests and `rank` as
the DAG runs them (`tests.support.dag.make_run`), for runs that differ in what makes a Parquet
schema vary (a plain run, a grid with a hold-out and a failed pair, a walk-forward, a run whose
every pair failed, day-over-day changes after a pointer). For each table: its columns and
partition keys, names and Glue types, equal the schema of the files at its location (both ways),
its location and projection follow backtest_airflow/layout.py and backtest/data/store.py, and the
copies hold the same rows as the run's own files.

Not verified here: Athena itself (no Glue or Athena in moto's CloudFormation, none offline), that
is, that its Parquet and JSON readers, the projection and the queries of docs/deployment.md
behave as AWS documents them.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import cache
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backtest.data.store import CandleStore
from backtest_airflow import layout
from backtest_airflow.report import history, leaderboard_files
from tests.support import REPO
from tests.support.dag import make_run

TEMPLATE_FILE = REPO / "infra" / "backtest-stack.yaml"
BUCKET, PREFIX = "store-bucket", "prod/backtests"  # what the template's ${StoreBucket} and ${DataPrefix} become
DATA_URL = f"s3://{BUCKET}/{PREFIX}"
TABLES = {  # Glue table resource -> the layout's table name
    "LeaderboardTable": layout.LEADERBOARD_TABLE,
    "GridTable": layout.GRID_TABLE,
    "LatestRunTable": layout.LATEST_TABLE,
    "CandlesTable": "candles",
}
GRID = [{"name": "sma_cross", "params": {"fast": "6h:12h:6h", "slow": "1d"}}]
# Arrow types as Glue/Hive spells them (what Athena's Parquet reader maps them to).
GLUE_TYPES = {
    pa.string(): "string",
    pa.large_string(): "string",
    pa.int64(): "bigint",
    pa.int32(): "int",
    pa.float64(): "double",
    pa.bool_(): "boolean",
    pa.timestamp("ms", tz="UTC"): "timestamp",
}


@cache
def template() -> dict:
    from cfnlint.decode import decode

    parsed, errors = decode(str(TEMPLATE_FILE))
    assert not errors, errors
    return json.loads(json.dumps(parsed))


def table_input(logical_id: str) -> dict:
    return template()["Resources"][logical_id]["Properties"]["TableInput"]


def glue_type(kind: pa.DataType) -> str:
    return GLUE_TYPES[kind]


def differences(columns: list[dict], schema: pa.Schema) -> list[str]:
    """How a Glue table's columns and a file's schema differ (empty: same names, same types)."""
    table = {c["Name"]: c["Type"] for c in columns}
    file = {f.name: glue_type(f.type) for f in schema}
    found = [f"{name}: in the file, not in the table" for name in file.keys() - table.keys()]
    found += [f"{name}: in the table, not in the file" for name in table.keys() - file.keys()]
    found += [f"{n}: table {table[n]}, file {file[n]}" for n in table.keys() & file.keys() if table[n] != file[n]]
    assert len(columns) == len(table), "a column twice"
    return sorted(found)


def values(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame's values without their dtypes (3 and 3.0 alike, NaN and None both None)."""
    return frame.astype(object).where(frame.notna(), None)


def resolved(value) -> str:
    """A location's Fn::Sub with the store's bucket and prefix filled in (`${!x}` is a literal `${x}`)."""
    text, variables = value["Fn::Sub"]
    assert set(variables) == {"StoreBucket"}
    text = text.replace("${StoreBucket}", BUCKET).replace("${DataPrefix}", PREFIX).replace("${!", "${")
    return text


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict:
    """A store with five ranked runs on four dates (pointers as `finish_run` writes them)."""
    store = str(tmp_path_factory.mktemp("glue") / "store")
    runs = [
        make_run(store, ["BTCUSDT", "ETHUSDT"], date="2026-10-01"),
        make_run(store, ["BTCUSDT", "ETHUSDT"], date="2026-10-02", failed=("ETHUSDT",), holdout_days=5,
                 strategies=GRID),
        make_run(store, ["BTCUSDT"], date="2026-10-03", walk_forward="10d:5d", lookback_days=40, strategies=GRID),
        make_run(store, ["BTCUSDT", "ETHUSDT"], date="2026-10-04", failed=("BTCUSDT", "ETHUSDT")),
        make_run(store, ["BTCUSDT", "ETHUSDT"], date="2026-10-04", run_id="manual__rerun", strategies=GRID),
    ]  # fmt: skip
    for run in runs[:4]:  # the re-run of 10-04 is not a successful one
        history.write_pointer(store, run["date"], run["run_id"])
    for run in runs:
        run["results_url"] = layout.results_url(store, run["date"], run["run_id"])
    return {"store": store, "runs": runs}


def copies(written: dict, table: str) -> list[Path]:
    """Every copy of a table in the store (whatever the runs named), one per run."""
    folder = Path(layout.results_root(written["store"])) / layout.TABLES_DIR / table
    found = sorted(folder.glob("date=*/*"))
    assert len(found) == len(written["runs"]), found
    return found


# ---------------------------------------------------------------------------------- columns


def test_leaderboard_table_is_the_schema_of_every_runs_copy(written):
    (schema,) = {pq.read_schema(path).remove_metadata() for path in copies(written, layout.LEADERBOARD_TABLE)}
    assert differences(table_input("LeaderboardTable")["StorageDescriptor"]["Columns"], schema) == []
    # The run's own leaderboard.parquet varies: a count is double when a row failed, a column
    # without a value is null. Its copy holds the same rows and every column, plus `run`.
    own = [pq.read_schema(Path(r["results_url"]) / layout.LEADERBOARD_PARQUET) for r in written["runs"]]
    assert len({str(s.remove_metadata()) for s in own}) > 1
    for run in written["runs"]:
        board = pd.read_parquet(Path(run["results_url"]) / layout.LEADERBOARD_PARQUET)
        copy = pd.read_parquet(layout.table_copy_url(run["results_url"], layout.LEADERBOARD_TABLE))
        assert list(copy.columns) == [*board.columns, "run"]
        assert set(copy["run"]) == {layout.run_folder_name(run["run_id"])}
        pd.testing.assert_frame_equal(values(copy.drop(columns="run")), values(board), check_dtype=False)


def test_grid_table_is_the_schema_of_every_runs_copy(written):
    (schema,) = {pq.read_schema(path).remove_metadata() for path in copies(written, layout.GRID_TABLE)}
    assert differences(table_input("GridTable")["StorageDescriptor"]["Columns"], schema) == []
    for run in written["runs"]:
        grid = pq.read_table(Path(run["results_url"]) / layout.GRID_PARQUET)
        copy = pq.read_table(layout.table_copy_url(run["results_url"], layout.GRID_TABLE))
        # The copy: the grid's columns but the parameter ones (`params` has them), every oos_ one, `run`.
        kept = [n for n in grid.column_names if not n.startswith(layout.GRID_PARAM_PREFIX)]
        assert set(copy.column_names) - set(kept) <= {"run", *(n for n in schema.names if n.startswith("oos_"))}
        assert set(kept) <= set(copy.column_names)
        assert copy.num_rows == grid.num_rows and set(copy["run"].to_pylist()) <= {layout.run_of(run["results_url"])}
        same = values(copy.select(kept).to_pandas()), values(grid.select(kept).to_pandas())
        pd.testing.assert_frame_equal(*same, check_dtype=False)
    grids = [pq.read_schema(Path(r["results_url"]) / layout.GRID_PARQUET).names for r in written["runs"]]
    assert any(n.startswith(layout.GRID_PARAM_PREFIX) for names in grids for n in names)  # left out above


def test_latest_run_table_is_the_pointer_record(written):
    """The date's `_latest.json` record (as `report.history` writes it): its keys are the table's
    columns and its partition key (the record's own `date` is the partition's, so not a column)."""
    spec = table_input("LatestRunTable")
    for run in written["runs"][:4]:
        pointer = Path(layout.results_root(written["store"])) / f"date={run['date']}" / layout.LATEST_JSON
        record = json.loads(pointer.read_text())
        columns = {c["Name"]: c["Type"] for c in spec["StorageDescriptor"]["Columns"]}
        keys = [k["Name"] for k in spec["PartitionKeys"]]
        assert set(record) == set(columns) | set(keys) and not set(columns) & set(keys)
        assert set(columns.values()) == {"string"} and all(isinstance(v, str) for v in record.values())
        assert record["date"] == run["date"]
    assert spec["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"


def test_candles_table_is_the_schema_of_the_month_files(written):
    store = CandleStore(written["store"])
    months = store.months("BTCUSDT")
    assert len(months) >= 2
    (schema,) = {pq.read_schema(store.month_file("BTCUSDT", m).path).remove_metadata() for m in months}
    assert differences(table_input("CandlesTable")["StorageDescriptor"]["Columns"], schema) == []


def test_the_check_fails_when_a_column_is_added_or_changes_type(written):
    """`differences` is the tests' verdict: a column that `rank` adds to the leaderboard, or one whose
    type changes, is reported (the copy keeps every column and types a new one by its values)."""
    board = pd.read_parquet(Path(written["runs"][0]["results_url"]) / layout.LEADERBOARD_PARQUET)
    columns = table_input("LeaderboardTable")["StorageDescriptor"]["Columns"]

    def copy_schema(frame: pd.DataFrame) -> pa.Schema:
        return leaderboard_files.table_schema(pa.Schema.from_pandas(frame, preserve_index=False).remove_metadata())

    assert differences(columns, copy_schema(board)) == []
    assert differences(columns, copy_schema(board.assign(ulcer_index=0.5))) == [
        "ulcer_index: in the file, not in the table"
    ]
    assert differences(columns, copy_schema(board.assign(regime="bull"))) == ["regime: in the file, not in the table"]
    assert differences(columns, copy_schema(board.drop(columns="sqn"))) == ["sqn: in the table, not in the file"]
    as_text = pa.schema([f.with_type(pa.string()) if f.name == "trades" else f for f in copy_schema(board)])
    assert differences(columns, as_text) == ["trades: table bigint, file string"]


# ---------------------------------------------------------------------------------- places


def java_to_strftime(pattern: str) -> str:
    """The projection's date formats used here (Java DateTimeFormatter) as strftime ones."""
    converted = pattern.replace("yyyy", "%Y").replace("MM", "%m").replace("dd", "%d")
    assert not re.search(r"[A-Za-z]", converted.replace("%Y", "").replace("%m", "").replace("%d", "")), pattern
    return converted


def projection(spec: dict) -> tuple[str, list[str]]:
    """A table's resolved location template and its partition keys, in order."""
    params = spec["Parameters"]
    assert params["projection.enabled"] == "true"
    return resolved(params["storage.location.template"]), [k["Name"] for k in spec["PartitionKeys"]]


def test_results_tables_are_where_rank_writes_their_copies(written):
    for logical_id in ("LeaderboardTable", "GridTable", "LatestRunTable"):
        spec = table_input(logical_id)
        assert spec["Name"] == TABLES[logical_id]
        location, keys = projection(spec)
        assert keys == ["date"] and [k["Type"] for k in spec["PartitionKeys"]] == ["string"]
        assert location == layout.table_folder(DATA_URL, spec["Name"], "${date}") + "/"
        assert resolved(spec["StorageDescriptor"]["Location"]) == location.split("date=${date}/")[0]
        params = spec["Parameters"]
        assert params["projection.date.type"] == "date" and params["projection.date.interval.unit"] == "DAYS"
        start, end = params["projection.date.range"].split(",")
        assert end == "NOW" and datetime.strptime(start, java_to_strftime(params["projection.date.format"]))
        assert layout.DATE_PATTERN.fullmatch(start)
    # Every copy is a file right in its date's partition folder, which the format projects.
    leaderboard, _ = projection(table_input("LeaderboardTable"))
    date_format = java_to_strftime(table_input("LeaderboardTable")["Parameters"]["projection.date.format"])
    for run in written["runs"]:
        url = layout.table_copy_url(run["results_url"], layout.LEADERBOARD_TABLE)
        date = datetime.strptime(run["date"], "%Y-%m-%d").strftime(date_format)
        assert url == leaderboard.replace("${date}", date).replace(DATA_URL, written["store"]) + Path(url).name
        assert not Path(url).name.startswith(("_", "."))  # Athena skips such names


def test_each_pointer_has_its_copy_in_the_latest_run_table(written):
    location, _ = projection(table_input("LatestRunTable"))
    for run in written["runs"][:4]:
        folder = layout.table_folder(written["store"], layout.LATEST_TABLE, run["date"])
        assert location.replace("${date}", run["date"]).replace(DATA_URL, written["store"]) == folder + "/"
        pointer = Path(layout.results_root(written["store"])) / f"date={run['date']}" / layout.LATEST_JSON
        assert (Path(folder) / layout.LATEST_TABLE_FILE).read_bytes() == pointer.read_bytes()


def test_candles_table_is_where_the_store_keeps_the_month_files(written):
    spec = table_input("CandlesTable")
    location, keys = projection(spec)
    params = spec["Parameters"]
    assert keys == ["symbol", "month"]
    month_file = CandleStore(DATA_URL).month_file("BTCUSDT", "2024-01").url
    folder = month_file.rsplit("/", 1)[0].replace("symbol=BTCUSDT", "symbol=${symbol}")
    assert location == folder.replace("month=2024-01", "month=${month}") + "/"
    assert params["projection.symbol.type"] == "injected"  # queries name the pair: WHERE symbol = '...'
    assert (params["projection.month.type"], params["projection.month.interval.unit"]) == ("date", "MONTHS")
    month_format = java_to_strftime(params["projection.month.format"])
    for month in CandleStore(written["store"]).months("BTCUSDT"):  # the store's month folders parse
        assert datetime.strptime(month, month_format).strftime(month_format) == month
    assert resolved(spec["StorageDescriptor"]["Location"]) == location.split("symbol=${symbol}/")[0]


def test_database_and_workgroup():
    resources = template()["Resources"]
    for logical_id in TABLES:
        assert resources[logical_id]["Properties"]["DatabaseName"] == {"Ref": "GlueDatabase"}
        assert table_input(logical_id)["TableType"] == "EXTERNAL_TABLE"
    config = resources["AthenaWorkGroup"]["Properties"]["WorkGroupConfiguration"]
    assert config["EnforceWorkGroupConfiguration"] is True
    assert resolved(config["ResultConfiguration"]["OutputLocation"]) == f"{DATA_URL}/athena-results/"
    assert config["ResultConfiguration"]["EncryptionConfiguration"] == {"EncryptionOption": "SSE_S3"}
