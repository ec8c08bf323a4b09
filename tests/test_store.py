"""The candle store on a local folder and on a real S3 API (moto's server on loopback)."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.data.candles import Candles
from backtest.data.storage import read_bytes, resolve
from backtest.data.store import CandleStore
from backtest.data.synthetic import synthetic_candles
from backtest.errors import DataError, InputError
from backtest.params import HOUR_MS, parse_time_ms
from tests.support import assert_same, file_bytes

JAN = parse_time_ms("2024-01-01")
APR = parse_time_ms("2024-04-01")


def test_round_trip_and_layout(store_url):
    store = CandleStore(store_url)
    candles = synthetic_candles("BTCUSDT", JAN, APR)
    summary = store.write("BTCUSDT", candles, "synthetic")
    assert summary.new_candles == len(candles) == 91 * 24
    assert summary.months_written == ("2024-01", "2024-02", "2024-03")
    assert store.months("BTCUSDT") == ["2024-01", "2024-02", "2024-03"]
    expected = store.root.join("candles", "interval=1h", "symbol=BTCUSDT", "month=2024-02", "part-0.parquet")
    assert read_bytes(expected) is not None

    stored = store.read("BTCUSDT")
    assert_same(stored.candles, candles)
    assert stored.sources == {"synthetic"}
    assert stored.gaps == []


def test_writing_twice_changes_nothing(store_url):
    store = CandleStore(store_url)
    candles = synthetic_candles("ETHUSDT", JAN, APR)
    store.write("ETHUSDT", candles, "synthetic")
    before = file_bytes(store, "ETHUSDT")
    again = store.write("ETHUSDT", candles, "synthetic")
    assert again.new_candles == 0 and again.months_written == ()
    assert file_bytes(store, "ETHUSDT") == before


def test_same_candles_give_same_bytes_in_any_write_order(tmp_path):
    candles = synthetic_candles("ETHUSDT", JAN, APR)
    one, two = CandleStore(str(tmp_path / "a")), CandleStore(str(tmp_path / "b"))
    one.write("ETHUSDT", candles, "synthetic")
    half = len(candles) // 2 + 5
    two.write("ETHUSDT", candles.slice(half, len(candles)), "synthetic")
    two.write("ETHUSDT", candles.slice(0, half), "synthetic")
    assert file_bytes(one, "ETHUSDT") == file_bytes(two, "ETHUSDT")


def test_merge_keeps_existing_candles_and_counts_conflicts(tmp_path):
    store = CandleStore(str(tmp_path))
    candles = synthetic_candles("SOLUSDT", JAN, JAN + 48 * HOUR_MS)
    store.write("SOLUSDT", candles.slice(0, 30), "synthetic")
    altered = candles.slice(20, 48)
    altered = Candles(altered.open_time, altered.open, altered.high * 1.5, altered.low, altered.close, altered.volume)
    summary = store.write("SOLUSDT", altered, "synthetic")
    assert summary.new_candles == 18 and summary.conflicts == 10
    stored = store.read("SOLUSDT").candles
    np.testing.assert_array_equal(stored.high[:30], candles.high[:30])  # history is not rewritten
    np.testing.assert_array_equal(stored.high[30:], altered.high[10:])


def test_read_touches_only_needed_months_and_takes_warmup(store_url):
    store = CandleStore(store_url)
    store.write("BTCUSDT", synthetic_candles("BTCUSDT", JAN, APR), "synthetic")
    feb, mar = parse_time_ms("2024-02-01"), parse_time_ms("2024-03-01")
    got = store.read("BTCUSDT", mar, APR)
    assert got.months_read == ("2024-03",)
    assert got.candles.open_time[0] == mar and len(got.candles) == 31 * 24

    # 360 warm-up bars before 2024-03-01 reach into February only.
    warm = store.read("BTCUSDT", mar, APR, warmup_bars=360)
    assert warm.months_read == ("2024-02", "2024-03")
    assert len(warm.candles) == 360 + 31 * 24
    assert warm.candles.open_time[0] == mar - 360 * HOUR_MS
    # A warm-up longer than February reaches January too.
    assert store.read("BTCUSDT", mar, APR, warmup_bars=800).months_read == ("2024-01", "2024-02", "2024-03")
    # Mid-month start: candles before start in the same month are warm-up first.
    mid = feb + 10 * 24 * HOUR_MS
    part = store.read("BTCUSDT", mid, mar, warmup_bars=24)
    assert part.months_read == ("2024-02",) and part.candles.open_time[0] == mid - 24 * HOUR_MS


def test_whole_store_is_one_hive_dataset(store_url):
    store = CandleStore(store_url)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        store.write(symbol, synthetic_candles(symbol, JAN, APR), "synthetic")
    root = store.root.join("candles")
    dataset = ds.dataset(root.path, filesystem=root.fs, format="parquet", partitioning="hive")
    table = dataset.to_table(filter=(ds.field("symbol") == "ETHUSDT") & (ds.field("month") == "2024-02"))
    assert table.num_rows == 29 * 24
    assert set(dataset.schema.names) >= {"open_time", "close", "interval", "symbol", "month"}
    assert str(dataset.schema.field("open_time").type) == "timestamp[ms, tz=UTC]"


def test_gaps_are_reported_not_filled(store_url):
    store = CandleStore(store_url)
    candles = synthetic_candles("XRPUSDT", JAN, JAN + 100 * HOUR_MS)
    keep = np.ones(len(candles), dtype=bool)
    keep[40:43] = False  # a three-hour exchange outage
    store.write("XRPUSDT", candles.take(keep), "synthetic")
    got = store.read("XRPUSDT")
    assert len(got.candles) == 97
    assert [(g.after_ms, g.hours) for g in got.gaps] == [(int(candles.open_time[39]), 3)]


def assert_read_is_bad_data(store: CandleStore, match: str) -> None:
    with pytest.raises(DataError, match=match):
        store.read("BTCUSDT")


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda c: c.take(np.array([0, 2, 1, 3])), "out-of-order"),
        (lambda c: c.take(np.array([0, 1, 1, 2])), "duplicate"),
        (lambda c: Candles(c.open_time, c.open, c.high, c.low * 0 - 1, c.close, c.volume), "non-positive"),
        (lambda c: Candles(c.open_time, c.open, c.low * 0.5, c.low, c.close, c.volume), "OHLC"),
        (lambda c: Candles(c.open_time, c.open * np.nan, c.high, c.low, c.close, c.volume), "price"),
    ],
)
def test_bad_files_are_rejected_on_read(tmp_path, corrupt, message):
    store = CandleStore(str(tmp_path))
    store.write("BTCUSDT", synthetic_candles("BTCUSDT", JAN, JAN + 4 * HOUR_MS), "synthetic")
    bad = corrupt(store.read("BTCUSDT").candles)
    pq.write_table(bad.to_table(), store.month_file("BTCUSDT", "2024-01").path)
    assert_read_is_bad_data(store, message)


def test_bad_candles_are_refused_on_write_and_nothing_is_stored(tmp_path):
    store = CandleStore(str(tmp_path))
    candles = synthetic_candles("BTCUSDT", JAN, JAN + 10 * HOUR_MS)
    off_hour = Candles(candles.open_time + 1, candles.open, candles.high, candles.low, candles.close, candles.volume)
    with pytest.raises(DataError, match="not on the hour"):
        store.write("BTCUSDT", off_hour, "synthetic")
    assert store.months("BTCUSDT") == []


def test_sources_are_not_mixed(tmp_path):
    store = CandleStore(str(tmp_path))
    store.write("BTCUSDT", synthetic_candles("BTCUSDT", JAN, JAN + 10 * HOUR_MS), "synthetic")
    before = file_bytes(store, "BTCUSDT")
    feb = parse_time_ms("2024-02-01")
    for start in (JAN + 10 * HOUR_MS, feb):  # the same month, and another month
        with pytest.raises(DataError) as caught:
            store.write("BTCUSDT", synthetic_candles("BTCUSDT", start, start + 10 * HOUR_MS), "binance")
        assert "holds synthetic candles; refusing to add binance candles (one source per pair)" in str(caught.value)
        assert "delete " + store.symbol_dir("BTCUSDT").url + " to start over" in str(caught.value)
    assert file_bytes(store, "BTCUSDT") == before and store.read_record("BTCUSDT").source == "synthetic"


def test_older_stores_without_a_record_keep_their_source(tmp_path):
    store = CandleStore(str(tmp_path))
    store.write("BTCUSDT", synthetic_candles("BTCUSDT", JAN, JAN + 10 * HOUR_MS), "synthetic")
    os.remove(store.record_file("BTCUSDT").path)  # as stored before pair records existed
    feb = parse_time_ms("2024-02-01")
    with pytest.raises(DataError, match="holds synthetic candles; refusing to add binance"):
        store.write("BTCUSDT", synthetic_candles("BTCUSDT", feb, feb + 10 * HOUR_MS), "binance")


@pytest.mark.parametrize("name", ["month=2026-13", "month=0000-00", "month=2024-1", "month=abc"])
def test_a_stray_month_folder_is_bad_data_naming_the_path(tmp_path, name):
    store = CandleStore(str(tmp_path))
    store.write("BTCUSDT", synthetic_candles("BTCUSDT", JAN, JAN + 10 * HOUR_MS), "synthetic")
    (tmp_path / "candles" / "interval=1h" / "symbol=BTCUSDT" / name).mkdir()  # even an empty one
    assert_read_is_bad_data(store, f"symbol=BTCUSDT/{name}: not a month folder")


def test_a_folder_where_a_month_file_should_be_is_bad_data(tmp_path):
    store = CandleStore(str(tmp_path))
    os.makedirs(store.month_file("BTCUSDT", "2024-01").path)
    assert_read_is_bad_data(store, r"part-0\.parquet is a folder, not a file")


def test_symbols_are_validated_before_any_key_is_built(tmp_path):
    store = CandleStore(str(tmp_path))
    for bad in ("../etc", "btcusdt", "BTC/USDT", "B", ""):
        with pytest.raises(InputError):
            store.month_file(bad, "2024-01")
    assert not (tmp_path / "candles").exists()


def test_missing_pair_is_a_clear_error(store_url):
    with pytest.raises(DataError, match="no candles stored for DOGEUSDT"):
        CandleStore(store_url).read("DOGEUSDT")


def test_local_writes_leave_no_temporary_files(tmp_path):
    store = CandleStore(str(tmp_path))
    store.write("BTCUSDT", synthetic_candles("BTCUSDT", JAN, APR), "synthetic")
    names = [name for _, _, files in os.walk(tmp_path / "candles") for name in files]
    assert sorted(names) == ["_pair.json"] + ["part-0.parquet"] * 3


def test_storage_urls():
    assert resolve("file:///tmp/x").path == "/tmp/x"
    assert resolve("s3://bucket/a/b/").path == "bucket/a/b"
    with pytest.raises(DataError, match="unsupported"):
        resolve("ftp://host/x")
    with pytest.raises(DataError, match="no bucket"):
        resolve("s3:///x")
    assert resolve("file://localhost/tmp/x").path == "/tmp/x"
    with pytest.raises(DataError, match="file URL file://tmp/x names a host 'tmp'"):
        resolve("file://tmp/x")  # not /x, silently


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 24 * 70 - 1), min_size=1, max_size=300, unique=True), st.integers(1, 3))
def test_round_trip_property(hours, splits):
    """Any subset of hours, written in any number of batches, reads back exactly, once."""
    candles = synthetic_candles("ADAUSDT", JAN, JAN + 24 * 70 * HOUR_MS)
    subset = candles.take(np.sort(np.array(hours)))
    with tempfile.TemporaryDirectory() as folder:
        store = CandleStore(folder)
        for batch in np.array_split(np.arange(len(subset)), splits):
            store.write("ADAUSDT", subset.take(batch), "synthetic")
        before = file_bytes(store, "ADAUSDT")
        assert store.write("ADAUSDT", subset, "synthetic").new_candles == 0
        assert file_bytes(store, "ADAUSDT") == before
        assert_same(store.read("ADAUSDT").candles, subset)
