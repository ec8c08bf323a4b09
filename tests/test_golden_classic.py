"""Long-only, no stops, no slippage, size 1: every figure and every equity value as before the
execution engine (issue 19): to the bit on the machine that wrote the files, and within a relative
1e-10 on any other (`same`).

Why not to the bit everywhere: numpy picks its SIMD kernels for the CPU it runs on (how a
reduction is unrolled; AVX-512's own power, log and exp), so another CPU may round the last bits of
a figure otherwise (measured: up to 1.2e-15 relative, on an AMD EPYC without AVX-512). A change of the
semantics (a fee, a bar, a fill) moves figures by many orders of magnitude more than 1e-10; every
count, time, text and key must still be exactly equal.

tests/golden/classic/ holds the output of 0a0d716 (the last commit before shorts and stops) for
the command lines in its cases.txt, on 200 days of synthetic ETHUSDT candles from 2017-02-01:
each case's result JSON and equity Parquet file. The new keys (`execution`, `exits`,
`long_trades`, `short_trades`, `final_position`, the grid's `execution`) are the only changes,
and one correction: a walk-forward's stitched `win_rate` no longer counts a trade still open at
the end of a fold's test window as closed at the next fold's first open (no such fill happens:
the next fold starts flat); it is open, as at any window's end (docs/walk-forward.md).

Issue 21 added keys (`psr` in every metrics object, `selection`, `dsr`, `next`, `trade_stats`,
the grid's `trials` and `sr0`, the walk-forward's `efficiency_median`, `in_sample_cagr` and
`next`) and one more correction: the walk-forward `efficiency` is pooled (the stitched
out-of-sample cagr over the folds' mean in-sample cagr), no longer the mean of the per-fold
ratios, which stay as they were in `folds`.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backtest.data.synthetic import EPOCH_MS, synthetic_candles
from backtest.params import DAY_MS
from tests.support import backtest_process

GOLDEN = Path(__file__).parent / "golden" / "classic"
CASES = [line.split() for line in (GOLDEN / "cases.txt").read_text().splitlines() if line.strip()]
NEW_KEYS = {"execution", "exits", "long_trades", "short_trades", "final_position"}
NEW_KEYS |= {"position_now", "position_since", "position_entry_price", "position_return"}  # issue 22
NEW_KEYS |= {"psr", "selection", "dsr", "next", "trade_stats", "trials", "sr0", "efficiency_median", "in_sample_cagr"}


@pytest.fixture(scope="module")
def candles_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eth") / "ETHUSDT.parquet"
    pq.write_table(synthetic_candles("ETHUSDT", EPOCH_MS, EPOCH_MS + 200 * DAY_MS).to_table(), path)
    return path


REL, ABS = 1e-10, 1e-12


def same(new, old, where: str = "") -> None:
    """`new` equals `old` at every depth: floats within REL (or ABS near 0), anything else exactly."""
    if isinstance(old, float) and isinstance(new, float):
        assert math.isclose(new, old, rel_tol=REL, abs_tol=ABS), (where, new, old)
    elif isinstance(old, dict):
        assert isinstance(new, dict) and new.keys() == old.keys(), (where, sorted(new), sorted(old))
        for key in old:
            same(new[key], old[key], f"{where}.{key}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), (where, new, old)
        for i, (a, b) in enumerate(zip(new, old, strict=True)):
            same(a, b, f"{where}[{i}]")
    else:
        assert type(new) is type(old) and new == old, (where, new, old)


def same_table(new: pa.Table, old: pa.Table) -> None:
    """Two Parquet tables with the same schema and rows: float columns within REL, the rest exactly."""
    assert new.schema == old.schema and new.num_rows == old.num_rows
    for name in old.column_names:
        a, b = new.column(name).to_numpy(zero_copy_only=False), old.column(name).to_numpy(zero_copy_only=False)
        if pa.types.is_floating(old.schema.field(name).type):
            assert np.allclose(a, b, rtol=REL, atol=ABS, equal_nan=True), name
        else:
            assert (a == b).all(), name


def without_new(value):
    """`value` with the keys the execution engine added removed, at every depth."""
    if isinstance(value, dict):
        return {k: without_new(v) for k, v in value.items() if k not in NEW_KEYS}
    if isinstance(value, list):
        return [without_new(v) for v in value]
    return value


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_classic_runs_are_identical_to_before(candles_file, tmp_path, case):
    name, *options = case
    results = tmp_path / name
    proc = backtest_process(
        "run", "--symbol", "ETHUSDT", "--input", str(candles_file), "--start", "2017-02-01", *options,
        "--results-url", str(results),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    new, old = json.loads((results / "ETHUSDT.json").read_text()), json.loads((GOLDEN / f"{name}.json").read_text())
    grid = new.get("grid")
    if grid is not None:
        assert grid.pop("execution") == {}
    if "walk_forward" in old:  # the one correction (see the module docstring): nothing else differs
        stitched = new["walk_forward"]["stitched"]
        assert new["oos"] == stitched and stitched["win_rate"] != old["oos"]["win_rate"]
        for figures in (old["oos"], old["walk_forward"]["stitched"], new["oos"], new["walk_forward"]["stitched"]):
            figures.pop("win_rate")
        walk = new["walk_forward"]
        ratios = [f["efficiency"] for f in walk["folds"] if f["efficiency"] is not None]
        assert old["walk_forward"].pop("efficiency") == pytest.approx(sum(ratios) / len(ratios), rel=1e-12)
        in_cagr = [f["in_sample"]["cagr"] for f in walk["folds"]]
        assert walk["in_sample_cagr"] == pytest.approx(sum(in_cagr) / len(in_cagr), rel=1e-12)
        pooled = walk.pop("efficiency")
        assert pooled == (stitched["cagr"] / walk["in_sample_cagr"] if walk["in_sample_cagr"] > 0 else None)
    same(without_new(new), old)  # every figure
    assert new["execution"] == {
        "direction": "long", "sl": None, "tp": None, "trail": None, "size": 1.0, "slippage_bps": 0.0,
        "borrow_bps_per_day": 0.0,
    }  # fmt: skip
    assert new["short_trades"] == 0 and new["long_trades"] == new["trades"]
    assert new["exits"]["stop"] == new["exits"]["take_profit"] == new["exits"]["ruin"] == 0
    same_table(pq.read_table(results / "ETHUSDT.equity.parquet"), pq.read_table(GOLDEN / f"{name}.equity.parquet"))


# tests/golden/classic/dag/: a daily run of the DAG at 0a0d716 under dag.test() with DAG_CONF (two
# pairs, a sma_trend grid with a hold-out, momentum at its defaults): each pair's result and
# equity file, and the leaderboard.
DAG_CONF = {
    "pairs": ["BTCUSDT", "ETHUSDT"],
    "lookback_days": 30,
    "holdout_days": 5,
    "fee_bps": 7,
    "strategies": [{"name": "sma_trend", "params": {"window": "1d,2d"}}, {"name": "momentum"}],
}


@pytest.mark.slow
def test_classic_dag_run_is_identical_to_before(airflow_db, tmp_path):
    from datetime import datetime

    import pandas as pd

    from tests.support.dag import run_daily_dag

    data_url = tmp_path / "store"
    dag_run = run_daily_dag(data_url, DAG_CONF, datetime.fromisoformat("2026-10-01T00:00:00+00:00"))
    assert dag_run.state == "success"
    (folder,) = sorted((data_url / "results" / "crypto_backtest_daily").glob("date=*/run=*"))
    golden = GOLDEN / "dag"
    for strategy in ("sma_trend", "momentum"):
        for symbol in DAG_CONF["pairs"]:
            new = json.loads((folder / f"strategy={strategy}" / f"{symbol}.json").read_text())
            new.get("grid", {}).pop("execution", None)
            same(without_new(new), json.loads((golden / f"{strategy}.{symbol}.json").read_text()), symbol)
            equity = pq.read_table(folder / f"strategy={strategy}" / f"{symbol}.equity.parquet")
            same_table(equity, pq.read_table(golden / f"{strategy}.{symbol}.equity.parquet"))
    old, new = pd.read_parquet(golden / "leaderboard.parquet"), pd.read_parquet(folder / "leaderboard.parquet")
    figures = [c for c in old.columns if c not in ("run_id", "as_of", "created_at")]
    assert len(new) == len(old) == 4
    pd.testing.assert_frame_equal(
        new[figures].reset_index(drop=True), old[figures].reset_index(drop=True), check_exact=False, rtol=REL, atol=ABS
    )


def test_the_comparison_sees_a_changed_figure_count_or_key():
    old = json.loads((GOLDEN / f"{CASES[0][0]}.json").read_text())
    same(copy.deepcopy(old), old)
    nudged = copy.deepcopy(old)
    nudged["total_return"] *= 1 + 1e-8  # far below any change of semantics, far above rounding
    counted, dropped = copy.deepcopy(old), copy.deepcopy(old)
    counted["trades"] += 1
    del dropped["sharpe"]
    for changed in (nudged, counted, dropped):
        with pytest.raises(AssertionError):
            same(changed, old)
