"""Hourly OHLCV candles: the schema, validation, gap detection and reading single files.

In memory a series is a `Candles` of numpy arrays (open time as int64 epoch milliseconds, UTC),
which keeps the job free of pandas and its start-up cost. On disk it is Arrow/Parquet with
`open_time` as `timestamp[ms, tz=UTC]` and float64 prices and volume.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from backtest.data.storage import Location, read_bytes, read_parquet_bytes
from backtest.errors import DataError, InputError
from backtest.params import HOUR_MS

PRICE_COLUMNS = ("open", "high", "low", "close")
VALUE_COLUMNS = (*PRICE_COLUMNS, "volume")
SCHEMA = pa.schema([("open_time", pa.timestamp("ms", tz="UTC"))] + [(name, pa.float64()) for name in VALUE_COLUMNS])


@dataclass(frozen=True)
class Candles:
    """One pair's candles in open-time order; `open_time` in epoch ms (UTC)."""

    open_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return len(self.open_time)

    def slice(self, start: int, stop: int) -> Candles:
        return Candles(*(getattr(self, name)[start:stop] for name in ("open_time", *VALUE_COLUMNS)))

    def take(self, mask_or_index: np.ndarray) -> Candles:
        return Candles(*(getattr(self, name)[mask_or_index] for name in ("open_time", *VALUE_COLUMNS)))

    @classmethod
    def empty(cls) -> Candles:
        return cls(np.empty(0, np.int64), *(np.empty(0, np.float64) for _ in VALUE_COLUMNS))

    @classmethod
    def concat(cls, parts: list[Candles]) -> Candles:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, n) for p in parts]) for n in ("open_time", *VALUE_COLUMNS)))

    def to_table(self) -> pa.Table:
        arrays = [to_arrow(self.open_time, SCHEMA.field("open_time").type)]
        arrays += [to_arrow(getattr(self, name), pa.float64()) for name in VALUE_COLUMNS]
        return pa.Table.from_arrays(arrays, schema=SCHEMA)

    @classmethod
    def from_table(cls, table: pa.Table, source: str = "table") -> Candles:
        """Build from a table with the candle columns (extra columns are ignored)."""
        missing = [name for name in SCHEMA.names if name not in table.column_names]
        if missing:
            raise DataError(f"{source}: missing column(s) {', '.join(missing)}; expected {', '.join(SCHEMA.names)}")
        if table.num_rows == 0:  # a header-only CSV's columns have no type at all
            return cls.empty()
        open_time = _open_time_ms(table.column("open_time"), source)
        values = []
        for name in VALUE_COLUMNS:
            column = table.column(name)
            if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
                raise DataError(f"{source}: column {name} must be numeric, not {column.type}")
            if column.null_count:
                raise DataError(f"{source}: column {name} has {column.null_count} empty value(s)")
            values.append(_to_numpy(column.cast(pa.float64()), np.float64))
        return cls(open_time, *values)


def to_arrow(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """A numpy array as a null-free Arrow array of a fixed-width type, sharing its buffer.

    Used instead of `pa.array`, which imports pandas when it is installed (~200 ms of a cold
    start on an Airflow worker; the image has no pandas).
    """
    kind = "f" if pa.types.is_floating(arrow_type) else "i"  # integers and timestamps are ints
    values = np.ascontiguousarray(values, dtype=f"<{kind}{arrow_type.bit_width // 8}")
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])


def _to_numpy(column: pa.ChunkedArray, dtype: type) -> np.ndarray:
    """A null-free fixed-width column as a numpy array, read straight from its Arrow buffer.

    pyarrow's own `to_numpy` imports pandas when it is installed, like `pa.array` (see above).
    """
    array = column.combine_chunks()
    itemsize = np.dtype(dtype).itemsize
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * itemsize)


def _open_time_ms(column: pa.ChunkedArray, source: str) -> np.ndarray:
    if column.null_count:
        raise DataError(f"{source}: open_time has {column.null_count} empty value(s)")
    if pa.types.is_timestamp(column.type):
        if column.type.tz not in (None, "UTC", "+00:00", "Etc/UTC"):
            column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))
        return _to_numpy(column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()), np.int64)
    if pa.types.is_integer(column.type):  # epoch milliseconds, as exchanges send them
        return _to_numpy(column.cast(pa.int64()), np.int64)
    raise DataError(f"{source}: open_time must be a timestamp or epoch milliseconds, not {column.type}")


def row_number(i: int) -> str:
    """Candle `i` (0-based) as a user counts rows: `row 1` is the first."""
    return f"row {i + 1}"


def csv_line(i: int) -> str:
    """Candle `i` (0-based) of a CSV file as its line in the file: the header is line 1, so the
    first candle is on line 2 (blank lines, which the reader skips, aside)."""
    return f"line {i + 2}"


def validate(candles: Candles, source: str, where: Callable[[int], str] = row_number) -> None:
    """Raise DataError unless the series is sorted, unique, hourly, finite and OHLC-consistent.

    `where` names a bad candle by its 0-based index: `row N` (1-based) by default, `csv_line` for a CSV file.
    """
    if len(candles) == 0:
        return
    t = candles.open_time
    steps = np.diff(t)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0)) + 1
        kind = "duplicate" if steps[i - 1] == 0 else "out-of-order"
        raise DataError(f"{source}: {kind} open_time at {where(i)}")
    if (t % HOUR_MS != 0).any():
        i = int(np.argmax(t % HOUR_MS != 0))
        raise DataError(f"{source}: open_time at {where(i)} is not on the hour")
    prices = np.stack([candles.open, candles.high, candles.low, candles.close])
    bad = ~np.isfinite(prices) | (prices <= 0)
    if bad.any():
        i = int(np.argmax(bad.any(axis=0)))
        raise DataError(f"{source}: missing or non-positive price at {where(i)}")
    bad_volume = ~np.isfinite(candles.volume) | (candles.volume < 0)
    if bad_volume.any():
        raise DataError(f"{source}: missing or negative volume at {where(int(np.argmax(bad_volume)))}")
    low_ok = candles.low <= np.minimum(candles.open, candles.close)
    high_ok = candles.high >= np.maximum(candles.open, candles.close)
    if not (low_ok & high_ok).all():
        i = int(np.argmax(~(low_ok & high_ok)))
        raise DataError(f"{source}: OHLC violation at {where(i)} (need low <= open,close <= high)")


@dataclass(frozen=True)
class Gap:
    """`hours` missing hourly candles right after the candle that opened at `after_ms`."""

    after_ms: int
    hours: int


def find_gaps(open_time: np.ndarray) -> list[Gap]:
    """Missing hours between consecutive candles (exchange outages are real and kept as gaps)."""
    if len(open_time) < 2:
        return []
    missing = np.diff(open_time) // HOUR_MS - 1
    idx = np.nonzero(missing > 0)[0]
    return [Gap(int(open_time[i]), int(missing[i])) for i in idx]


SYMBOL_COLUMNS = ("ticker", "symbol")  # a file's own pair column, as exported Binance data has


def read_candle_file(loc: Location, symbol: str | None = None) -> Candles:
    """Read one Parquet or CSV file (local or S3) with the candle columns, validated.

    CSV needs a header; `date` is accepted for `open_time` (as in exported Binance data) and
    extra columns are ignored, but a `ticker` or `symbol` column must name `symbol` only (when
    given): a result labelled with another pair than its candles' is refused (an input error). A
    bad candle is named by its line in a CSV file (the header is line 1) and by its row (from 1)
    in a Parquet file; a file without candles is bad data.
    """
    data = read_bytes(loc)
    if data is None:
        raise DataError(f"input file not found: {loc.url}")
    name = posixpath.basename(loc.path).lower()
    is_csv = name.endswith(".csv") or name.endswith(".csv.gz")
    try:
        table = _read_csv(data, name.endswith(".gz")) if is_csv else read_parquet_bytes(data)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        kind = "CSV" if is_csv else "Parquet (a name not ending in .csv or .csv.gz is read as Parquet)"
        raise DataError(f"{loc.url}: not a readable candle file: read as {kind}: {str(exc).splitlines()[0]}") from None
    for column in (c for c in SYMBOL_COLUMNS if symbol and c in table.column_names):
        named = sorted({str(v) for v in table.column(column).unique().to_pylist() if v is not None})
        if named and named != [symbol]:
            raise InputError(
                f"{loc.url}: its {column} column names {', '.join(named[:3])}, not {symbol} (check --symbol)"
            )
    if "open_time" not in table.column_names and "date" in table.column_names:
        table = table.rename_columns(["open_time" if c == "date" else c for c in table.column_names])
    candles = Candles.from_table(table, loc.url)
    if len(candles) == 0:
        raise DataError(f"{loc.url}: the file has no candles ({'only a header' if is_csv else 'no rows'})")
    validate(candles, loc.url, csv_line if is_csv else row_number)
    return candles


def _read_csv(data: bytes, gzipped: bool) -> pa.Table:
    import pyarrow.csv as pacsv

    stream: pa.NativeFile = pa.BufferReader(data)
    if gzipped:
        stream = pa.CompressedInputStream(stream, "gzip")
    types = {name: pa.float64() for name in VALUE_COLUMNS}
    convert = pacsv.ConvertOptions(column_types=types, timestamp_parsers=[pacsv.ISO8601])
    return pacsv.read_csv(stream, convert_options=convert)
