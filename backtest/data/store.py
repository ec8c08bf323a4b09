"""The candle store: hive-partitioned Parquet, one file per pair per month.

Layout (readable as one dataset by pyarrow, DuckDB and Athena):

    {data_url}/candles/interval=1h/symbol=BTCUSDT/month=2023-12/part-0.parquet

Each file holds `open_time, open, high, low, close, volume` sorted by `open_time` with no
duplicates; `symbol` and `month` live in the path only. The file's Parquet metadata records
where the candles came from (`backtest.source`: `binance`, `synthetic`, ...), so that results
derived from synthetic data can say so.

Writes merge new candles into the month files (existing candles win on a conflict: history
is not rewritten), skip files whose content would not change, and replace changed files
atomically. Writing the same candles twice therefore leaves the same bytes.

Each pair also has one small record, `symbol=BTCUSDT/_pair.json` (the leading `_` keeps it out
of the Parquet dataset for pyarrow, Athena and Spark): the pair's one source, and the open-time
ranges already fetched from it (`covered`, half-open, merged). A refresh fetches only what is
not covered, and extends `covered` (atomically, after the candles it covers are written), so an
interrupted refresh leaves no permanent hole and hours the source does not have (exchange
outages) are not asked for again. Example:

    {"symbol": "BTCUSDT", "interval": "1h", "source": "binance",
     "covered": [["2021-01-01T00:00:00Z", "2024-07-01T00:00:00Z"]]}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from backtest.data.candles import SCHEMA, Candles, Gap, find_gaps, validate
from backtest.data.locks import exclusive_lock
from backtest.data.storage import (
    Location,
    list_dir,
    read_bytes,
    read_parquet_bytes,
    resolve,
    write_bytes_atomic,
)
from backtest.errors import DataError
from backtest.params import HOUR_MS, format_time_ms, parse_time_ms, validate_symbol

INTERVAL = "1h"
PART_FILE = "part-0.parquet"
RECORD_FILE = "_pair.json"
SOURCE_KEY = b"backtest.source"
_MONTH_DIR = re.compile(r"month=([0-9]{4})-(0[1-9]|1[0-2])")


def month_of(open_time_ms: np.ndarray) -> np.ndarray:
    """Month labels (`YYYY-MM`) of epoch-ms open times."""
    return np.datetime_as_string(open_time_ms.astype("datetime64[ms]").astype("datetime64[M]"), unit="M")


def month_start_ms(month: str) -> int:
    return int(np.datetime64(month, "M").astype("datetime64[ms]").astype(np.int64))


def next_month_start_ms(month: str) -> int:
    return int((np.datetime64(month, "M") + 1).astype("datetime64[ms]").astype(np.int64))


Range = tuple[int, int]  # half-open [start, end) of open times, epoch ms


def merge_ranges(ranges: list[Range]) -> tuple[Range, ...]:
    """Sorted, non-empty, non-overlapping ranges; touching ranges are joined."""
    merged: list[list[int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((a, b) for a, b in merged)


def missing_ranges(start: int, end: int, covered: tuple[Range, ...]) -> list[Range]:
    """The parts of [start, end) that `covered` (merged) does not cover, oldest first."""
    missing, cursor = [], start
    for a, b in covered:
        if b <= cursor or a >= end:
            continue
        if a > cursor:
            missing.append((cursor, a))
        cursor = max(cursor, b)
    if cursor < end:
        missing.append((cursor, end))
    return missing


@dataclass(frozen=True)
class PairRecord:
    """A pair's one source and the open-time ranges already fetched from it (see the module docstring)."""

    symbol: str
    source: str
    covered: tuple[Range, ...] = ()

    def to_bytes(self) -> bytes:
        covered = [[format_time_ms(a), format_time_ms(b)] for a, b in self.covered]
        record = {"symbol": self.symbol, "interval": INTERVAL, "source": self.source, "covered": covered}
        return (json.dumps(record, indent=1) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> PairRecord:
        try:
            record = json.loads(data)
            ranges = [(parse_time_ms(a), parse_time_ms(b)) for a, b in record["covered"]]
            symbol, source = record["symbol"], record["source"]
            if not (isinstance(symbol, str) and isinstance(source, str) and record["interval"] == INTERVAL):
                raise ValueError
        except Exception:
            raise DataError(f"{where}: not a valid pair record (delete it; the next refresh rebuilds it)") from None
        if any(a % HOUR_MS or b % HOUR_MS or a >= b for a, b in ranges):
            raise DataError(f"{where}: covered ranges must be whole hours, start before end")
        return cls(symbol, source, merge_ranges(ranges))


@dataclass(frozen=True)
class StoredSeries:
    """Candles read from the store, with where they came from and what was touched."""

    candles: Candles
    sources: frozenset[str]
    months_read: tuple[str, ...]
    gaps: list[Gap] = field(default_factory=list)


@dataclass(frozen=True)
class WriteSummary:
    new_candles: int
    months_written: tuple[str, ...]
    conflicts: int


class CandleStore:
    """Reads and writes one data URL's candles (`s3://bucket/prefix` or a local folder)."""

    def __init__(self, data_url: str):
        self.root = resolve(data_url)

    def symbol_dir(self, symbol: str) -> Location:
        validate_symbol(symbol)
        return self.root.join("candles", f"interval={INTERVAL}", f"symbol={symbol}")

    def month_file(self, symbol: str, month: str) -> Location:
        return self.symbol_dir(symbol).join(f"month={month}", PART_FILE)

    def record_file(self, symbol: str) -> Location:
        return self.symbol_dir(symbol).join(RECORD_FILE)

    def months(self, symbol: str) -> list[str]:
        """Months stored for a pair, oldest first (one listing call); a stray `month=` name is bad data."""
        folder = self.symbol_dir(symbol)
        months = []
        for name in list_dir(folder):
            if not name.startswith("month="):
                continue
            match = _MONTH_DIR.fullmatch(name)
            if not match or int(match.group(1)) < 1970:
                raise DataError(f"{folder.url}/{name}: not a month folder (month=YYYY-MM); move or delete it")
            months.append(name.removeprefix("month="))
        return months

    def read_record(self, symbol: str) -> PairRecord | None:
        """The pair's record, or None for a new pair (or one stored before records existed)."""
        loc = self.record_file(symbol)
        data = read_bytes(loc)
        if data is None:
            return None
        record = PairRecord.from_bytes(data, loc.url)
        if record.symbol != symbol:
            raise DataError(f"{loc.url}: records {record.symbol}, not {symbol}")
        return record

    def write_record(self, record: PairRecord) -> None:
        write_bytes_atomic(self.record_file(record.symbol), record.to_bytes())

    def pair_source(self, symbol: str, record: PairRecord | None = None) -> str | None:
        """The one source of a pair's candles: from its record, else (older stores) its newest month file."""
        if record is not None:
            return record.source
        for month in reversed(self.months(symbol)):
            _, source = self._read_month(symbol, month)
            if source:
                return source
        return None

    def check_source(self, symbol: str, source: str) -> PairRecord | None:
        """The pair's record (None if it has none yet), after checking that `source` is the pair's source."""
        record = self.read_record(symbol)
        existing = self.pair_source(symbol, record)
        if existing is not None and existing != source:
            raise DataError(
                f"{symbol} in {self.root.url} holds {existing} candles; refusing to add {source} candles "
                f"(one source per pair): delete {self.symbol_dir(symbol).url} to start over with {source}, "
                "or use another data URL"
            )
        return record

    def lock(self, symbol: str):
        """Exclusive lock on a pair's candles (a context manager yielding its `Lease`), so overlapping
        refreshes cannot lose candles; see `backtest.data.locks.exclusive_lock`."""
        validate_symbol(symbol)
        return exclusive_lock(self.root.join("locks", f"candles-{INTERVAL}-{symbol}.lock"))

    # -- reading ---------------------------------------------------------------------------

    def _read_month(self, symbol: str, month: str) -> tuple[Candles, str | None]:
        loc = self.month_file(symbol, month)
        data = read_bytes(loc)
        if data is None:
            return Candles.empty(), None
        try:
            table = read_parquet_bytes(data)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{loc.url}: unreadable Parquet ({str(exc).splitlines()[0]})") from None
        candles = Candles.from_table(table, loc.url)
        validate(candles, loc.url)
        if len(candles) and (month_of(candles.open_time[[0, -1]]) != month).any():
            raise DataError(f"{loc.url}: holds candles outside month {month}")
        metadata = table.schema.metadata or {}
        source = metadata.get(SOURCE_KEY)
        return candles, source.decode() if source else None

    def read(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, warmup_bars: int = 0
    ) -> StoredSeries:
        """Candles with `start <= open_time < end`, plus up to `warmup_bars` candles before start.

        Only the months overlapping the range are read, and earlier months only while the
        warm-up is still short of `warmup_bars`.
        """
        stored = self.months(symbol)
        if not stored:
            raise DataError(f"no candles stored for {symbol} under {self.root.url}")
        lo = -(2**62) if start_ms is None else start_ms
        hi = 2**62 if end_ms is None else end_ms
        in_range = [m for m in stored if next_month_start_ms(m) > lo and month_start_ms(m) < hi]
        earlier = [m for m in stored if next_month_start_ms(m) <= lo]

        sources: set[str] = set()
        months_read: list[str] = []

        def read_month(month: str) -> Candles:
            candles, source = self._read_month(symbol, month)
            months_read.append(month)
            if source:
                sources.add(source)
            return candles

        parts = [read_month(m) for m in in_range]
        loaded = Candles.concat(parts)
        before = loaded.take(loaded.open_time < lo)
        window = loaded.take((loaded.open_time >= lo) & (loaded.open_time < hi))
        while len(before) < warmup_bars and earlier:
            before = Candles.concat([read_month(earlier.pop()), before])
        before = before.slice(max(0, len(before) - warmup_bars), len(before))
        series = Candles.concat([before, window])
        validate(series, f"{symbol} in {self.root.url}")
        return StoredSeries(series, frozenset(sources), tuple(sorted(months_read)), find_gaps(window.open_time))

    def first_open_time(self, symbol: str) -> int | None:
        """Open time of the oldest stored candle, or None when the pair has none."""
        for month in self.months(symbol):
            candles, _ = self._read_month(symbol, month)
            if len(candles):
                return int(candles.open_time[0])
        return None

    def last_open_time(self, symbol: str) -> int | None:
        """Open time of the newest stored candle, or None when the pair has none."""
        for month in reversed(self.months(symbol)):
            candles, _ = self._read_month(symbol, month)
            if len(candles):
                return int(candles.open_time[-1])
        return None

    # -- writing ---------------------------------------------------------------------------

    def write(self, symbol: str, candles: Candles, source: str) -> WriteSummary:
        """Merge candles into the pair's month files; a no-op when nothing would change.

        A pair holds candles of one source only (checked against its record, DataError otherwise).
        """
        validate_symbol(symbol)
        validate(candles, f"new candles for {symbol}")
        if len(candles) == 0:
            return WriteSummary(0, (), 0)
        if self.check_source(symbol, source) is None:
            self.write_record(PairRecord(symbol, source))  # the pair's source is claimed before any candle
        labels = month_of(candles.open_time)
        new_total = 0
        conflicts = 0
        written: list[str] = []
        for month in np.unique(labels):
            incoming = candles.take(labels == month)
            existing, existing_source = self._read_month(symbol, str(month))
            if existing_source and existing_source != source:
                raise DataError(
                    f"{symbol} month {month} holds {existing_source} candles; refusing to mix in {source} candles "
                    "(use another data URL)"
                )
            merged, added, clashes = _merge(existing, incoming)
            conflicts += clashes
            if added == 0:
                continue
            self._write_month(symbol, str(month), merged, source)
            new_total += added
            written.append(str(month))
        return WriteSummary(new_total, tuple(written), conflicts)

    def _write_month(self, symbol: str, month: str, candles: Candles, source: str) -> None:
        table = candles.to_table().replace_schema_metadata({SOURCE_KEY: source.encode()})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="snappy", write_statistics=True)
        write_bytes_atomic(self.month_file(symbol, month), sink.getvalue().to_pybytes())


def _merge(existing: Candles, incoming: Candles) -> tuple[Candles, int, int]:
    """Union by open time, existing rows first; returns (merged, rows added, conflicting rows)."""
    if len(existing) == 0:
        return incoming, len(incoming), 0
    is_new = ~np.isin(incoming.open_time, existing.open_time)
    overlap = incoming.take(~is_new)
    conflicts = 0
    if len(overlap):
        idx = np.searchsorted(existing.open_time, overlap.open_time)
        same = existing.take(idx)
        differs = np.zeros(len(overlap), dtype=bool)
        for name in ("open", "high", "low", "close", "volume"):
            differs |= getattr(same, name) != getattr(overlap, name)
        conflicts = int(differs.sum())
    added = incoming.take(is_new)
    if len(added) == 0:
        return existing, 0, conflicts
    merged = Candles.concat([existing, added])
    order = np.argsort(merged.open_time, kind="stable")
    return merged.take(order), len(added), conflicts


__all__ = ["HOUR_MS", "SCHEMA", "CandleStore", "StoredSeries", "WriteSummary", "month_of"]
