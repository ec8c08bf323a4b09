"""The run's grid file (`layout.GRID_PARQUET`): every combination of every result, beside the leaderboard.

It has one row per (pair, strategy, combination) of every
result, failed ones aside: `symbol`, `strategy`, `status`, `combination` (the index in the
result's grid), `best`, `params` (text), its execution (`direction`, `sl`, `tp`, `trail`: a grid
of stop levels varies them), one column per parameter as the result JSON spells it
(`param_fast` = "1d", `param_fast_bars` = 24; strategies share a column when they share a
parameter name, others are null), every metric (`exits` as `exits_signal`, ...), `excess_return` and, with a hold-out, the
`oos_*` metrics. It is written while the results are read, one row group at a time, so memory
stays bounded for 1,000 pairs x a large grid (`GridWriter`, fed by `leaderboard.build`).

Its copy for the Athena table (`layout.table_copy_url`, `GRID_TABLE`) has one schema for every
run (`grid_table_schema`): no parameter columns, every `oos_*` one, and `run`.
"""

from __future__ import annotations

from itertools import chain
from operator import itemgetter

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from backtest.data.storage import Location, resolve, write_bytes_atomic
from backtest.simulation.metrics import EXIT_COLUMNS, FLAT_METRIC_NAMES
from backtest_airflow import layout
from backtest_airflow.report.results import combinations, value_text

STOP_COLUMNS = ("direction", "sl", "tp", "trail")  # each row's execution (the stops vary in a grid)

GRID_ROW_GROUP_ROWS = 131_072  # rows buffered before the grid file gets a row group
GRID_KEYS = ("symbol", "strategy", "status", "combination", "best", "params")
# The metrics that are counts (their `oos_` ones too): int64 in the Athena tables' copies.
INTEGER_METRICS = ("trades", "long_trades", "short_trades", *EXIT_COLUMNS, "bars", "gaps")


def _arrow_type(values: list) -> pa.DataType:
    """A column's type from its JSON values: bool, int64, float64 (ints and floats mixed) or string."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds or kinds <= {float, int}:
        return pa.int64() if kinds == {int} else pa.float64()
    if kinds == {bool}:
        return pa.bool_()
    return pa.string()


def grid_schema(samples: list[dict]) -> pa.Schema:
    """The grid file's columns for results like `samples` (one per strategy): see the module docstring."""
    params: dict[str, pa.DataType] = {}
    metrics: dict[str, pa.DataType] = {}
    oos = False
    for result in samples:
        rows, _ = combinations(result)
        for key in dict.fromkeys(k for row in rows for k in row["params"]):
            kind = _arrow_type([row["params"].get(key) for row in rows])
            seen = params.setdefault(key, kind)
            if seen != kind:  # two strategies' parameters of one name: numbers stay numbers, else text
                params[key] = pa.float64() if {seen, kind} <= {pa.int64(), pa.float64()} else pa.string()
        for name in FLAT_METRIC_NAMES:
            kind = _arrow_type([row.get(name) for row in rows])
            metrics[name] = pa.float64() if metrics.get(name, kind) != kind else kind
        oos = oos or any("oos" in row for row in rows)
    fields = [
        ("symbol", pa.string()),
        ("strategy", pa.string()),
        ("status", pa.string()),
        ("combination", pa.int32()),
        ("best", pa.bool_()),
        ("params", pa.string()),
        ("direction", pa.string()),
        *((name, pa.float64()) for name in STOP_COLUMNS[1:]),
        *((layout.GRID_PARAM_PREFIX + key, kind) for key, kind in params.items()),
        *((name, metrics.get(name, pa.float64())) for name in FLAT_METRIC_NAMES),
        ("excess_return", pa.float64()),
        *((f"oos_{name}", metrics.get(name, pa.float64())) for name in FLAT_METRIC_NAMES if oos),
    ]
    return pa.schema(fields)


def grid_columns(symbol: str, strategy: str, result: dict, status: str) -> dict[str, list]:
    """One result's grid rows, column by column (keys as in `grid_schema`).

    Column-wise, with C-level transposes (`itemgetter`, `zip`): 1,000 pairs x 539 combinations
    are 539,000 rows, and a Python call per row and column would dominate the rank step."""
    rows, best = combinations(result)
    n = len(rows)
    params = [row["params"] for row in rows]
    keys = list(dict.fromkeys(chain.from_iterable(params)))
    columns: dict[str, list] = {
        "symbol": [symbol] * n,
        "strategy": [strategy] * n,
        "status": [status] * n,
        "combination": list(range(n)),
        "best": [i == best for i in range(n)],
    }
    values = dict(zip(keys, _transpose(params, keys), strict=True))
    shown = [k for k in keys if k != "fee_bps" and not (k.endswith("_bars") and k.removesuffix("_bars") in keys)]
    pieces = [[f"{k}={v if isinstance(v, str) else value_text(v)}" for v in values[k]] for k in shown]
    columns["params"] = [" ".join(texts) for texts in zip(*pieces, strict=True)] if shown else [""] * n
    executions = [row["execution"] for row in rows]
    columns.update(zip(STOP_COLUMNS, _transpose(executions, STOP_COLUMNS), strict=True))
    columns.update({layout.GRID_PARAM_PREFIX + k: column for k, column in values.items()})
    metrics = dict(zip(FLAT_METRIC_NAMES, _transpose(rows, FLAT_METRIC_NAMES), strict=True))
    columns.update(metrics)
    columns["excess_return"] = [
        None if t is None or b is None else t - b
        for t, b in zip(metrics["total_return"], metrics["buy_hold_return"], strict=True)
    ]
    if any("oos" in row for row in rows):
        oos = _transpose([row.get("oos") or {} for row in rows], FLAT_METRIC_NAMES)
        columns.update({f"oos_{name}": column for name, column in zip(FLAT_METRIC_NAMES, oos, strict=True)})
    return columns


def _transpose(records: list[dict], keys) -> list[list]:
    """[[record[key] for record in records] for key in keys], None where a record lacks the key."""
    keys = list(keys)
    if not keys:
        return []
    try:
        got = list(map(itemgetter(*keys), records))
    except KeyError:
        return [[record.get(key) for record in records] for key in keys]
    if len(keys) == 1:
        return [got]
    return [list(column) for column in zip(*got, strict=True)] if got else [[] for _ in keys]


class GridWriter:
    """The grid file, built in memory one row group at a time (compressed), stored atomically by `close`."""

    def __init__(self, schema: pa.Schema, row_group_rows: int = GRID_ROW_GROUP_ROWS):
        self.schema, self.row_group_rows = schema, row_group_rows
        self.sink = pa.BufferOutputStream()
        self.writer = pq.ParquetWriter(self.sink, schema, compression="zstd")
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = self.rows = 0

    def add(self, columns: dict[str, list]) -> None:
        n = len(columns["symbol"])
        arrays = [_array(columns.get(f.name), f.type, n) for f in self.schema]
        self.pending.append(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.pending_rows += n
        if self.pending_rows >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.Table.from_batches(self.pending), row_group_size=self.row_group_rows)
            self.rows += self.pending_rows
            self.pending, self.pending_rows = [], 0

    def close(self, loc: Location) -> str:
        """Store the grid file at `loc` and, in a run's results folder, its table copy."""
        self._flush()
        self.writer.close()
        data = self.sink.getvalue()
        write_bytes_atomic(loc, data)  # a pyarrow Buffer: no copy into bytes
        results_url = loc.url.rsplit("/", 1)[0]
        copy = layout.table_copy_url(results_url, layout.GRID_TABLE)
        if copy:
            write_bytes_atomic(resolve(copy), table_copy(data, grid_table_schema(), layout.run_of(results_url)))
        return loc.url


def _array(values: list | None, kind: pa.DataType, n: int) -> pa.Array:
    if values is None:
        return pa.nulls(n, kind)
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        if kind != pa.string():
            raise
    # A parameter name two strategies use with different types: its column is text.
    return pa.array([None if v is None else v if isinstance(v, str) else value_text(v) for v in values], kind)


def metric_type(name: str) -> pa.DataType:
    """A metric column's type in the Athena tables' copies (`name` may have an `oos_` prefix)."""
    return pa.int64() if name.removeprefix("oos_") in INTEGER_METRICS else pa.float64()


def grid_table_schema() -> pa.Schema:
    """The grid's table copy: `grid_schema`'s columns less the parameter ones (they differ between
    strategies; `params` has them), every `oos_*` metric, the counts int64, and `run`."""
    metrics = {*FLAT_METRIC_NAMES, *(f"oos_{name}" for name in FLAT_METRIC_NAMES)}
    fields = [*grid_schema([]), *(pa.field(f"oos_{name}", pa.float64()) for name in FLAT_METRIC_NAMES)]
    typed = [f.with_type(metric_type(f.name)) if f.name in metrics else f for f in fields]
    return pa.schema([*typed, pa.field("run", pa.string())])


def table_copy(data: pa.Buffer | bytes, schema: pa.Schema, run: str) -> pa.Buffer:
    """A Parquet file (the grid, the leaderboard) as its Athena table's copy: `schema`'s columns in
    its order (null where the file lacks one; the file's others left out) cast to its types, `run`
    the run's folder name; one row group at a time. A value that does not fit its type raises."""
    source = pq.ParquetFile(pa.BufferReader(data))
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for batch in source.iter_batches(batch_size=GRID_ROW_GROUP_ROWS, use_threads=False):
            n, names = batch.num_rows, batch.schema.names
            arrays = [
                pa.array([run] * n, f.type) if f.name == "run"
                else batch.column(f.name).cast(f.type) if f.name in names
                else pa.nulls(n, f.type)
                for f in schema
            ]  # fmt: skip
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=GRID_ROW_GROUP_ROWS)
    return sink.getvalue()


def grid_shape(results_url: str) -> tuple[int, list[str]] | None:
    """A run's grid file's row count and column names (from its footer), or None when it has none."""
    loc = resolve(results_url).join(layout.GRID_PARQUET)
    if loc.fs.get_file_info(loc.path).type != pafs.FileType.File:
        return None
    metadata = pq.read_metadata(loc.path, filesystem=loc.fs)
    return metadata.num_rows, metadata.schema.to_arrow_schema().names


def read_grid(results_url: str, columns: list[str] | None = None, filters=None) -> pd.DataFrame:
    """Some columns of a run's grid file, the rows matching pyarrow `filters` (e.g. [("strategy", "==", "x")])."""
    loc = resolve(results_url).join(layout.GRID_PARQUET)
    return pq.read_table(loc.path, filesystem=loc.fs, columns=columns, filters=filters, use_threads=False).to_pandas()
