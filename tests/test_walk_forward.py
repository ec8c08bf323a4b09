"""`run --walk-forward TRAIN:TEST[:anchored]` against an independent reference that literally runs
every fold as separate CLI runs over the split windows and stitches them; bad specifications and a
too-short window are exit 2; a planted overfit shows a negative walk-forward efficiency."""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
from datetime import datetime, timedelta

import numpy as np
import pyarrow.parquet as pq
import pytest

from backtest.data.candles import read_candle_file
from backtest.data.storage import resolve
from backtest.data.synthetic import EPOCH_MS
from backtest.params import HOUR_MS
from backtest.simulation.metrics import METRIC_NAMES
from backtest.strategy import STRATEGY_PATH_ENV
from tests.support import backtest_process, make_candles, run_cli, run_json

TIME = "%Y-%m-%dT%H:%M:%SZ"
# what a walk-forward says of the combination it trades next (the last fold's), not the whole window's best
CHOSEN_NEXT = ("selection", "next", "position_now", "position_since", "position_entry_price", "position_return")


# -- the reference: every fold as separate CLI runs ------------------------------------------------


def reference_folds(start: str, end: str, train_days: int, test_days: int, anchored: bool) -> list[tuple[str, ...]]:
    """(train_start, train_end, test_start, test_end) of each fold, from the issue's formula."""
    s, e = datetime.strptime(start, TIME), datetime.strptime(end, TIME)
    train, test = timedelta(days=train_days), timedelta(days=test_days)
    folds, k = [], 0
    while s + train + k * test < e:
        test_start = s + train + k * test
        test_end = min(test_start + test, e)
        train_start = s if anchored else test_start - train
        folds.append(tuple(t.strftime(TIME) for t in (train_start, test_start, test_start, test_end)))
        k += 1
    return folds


def first_best(rows: list[dict], metric: str) -> int:
    """The grid's rule, written out: the first row with the best value; an undefined value loses."""
    best, best_key = 0, None
    for i, row in enumerate(rows):
        if row[metric] is None:
            continue
        key = -row[metric] if metric == "max_drawdown" else row[metric]
        if best_key is None or key > best_key:
            best, best_key = i, key
    return best


def as_params(params: dict) -> list[str]:
    """A sweep row's params as --param arguments (bar counts as bars)."""
    args = []
    for name, value in params.items():
        if not name.endswith("_bars"):
            args += ["--param", f"{name}={params.get(f'{name}_bars', value)}"]
    return args


def reference_walk_forward(capsys, source: list[str], grid: list[str], folds, select_by: str) -> list[dict]:
    """Each fold: one grid run on the training window (its sweep rows are the per-combination runs),
    the best row chosen here, then that combination alone on the test window."""
    out = []
    for train_start, train_end, test_start, test_end in folds:
        code, (train,) = run_json(
            capsys, *source, *grid, "--start", train_start, "--end", train_end, "--select-by", select_by
        )
        assert code == 0
        rows = train["sweep"]
        chosen = rows[first_best(rows, select_by)]
        code, (test,) = run_json(
            capsys, *source, *grid[:2], *as_params(chosen["params"]), "--start", test_start, "--end", test_end
        )
        assert code == 0
        out.append({"chosen": chosen, "test": test})
    return out


def check_against_reference(capsys, tmp_path, source: list[str], grid: list[str], window: list[str], spec: str,
                            select_by: str) -> dict:  # fmt: skip
    """Run the walk-forward and the reference; everything they share must agree."""
    results = tmp_path / "results"
    code, (result,) = run_json(
        capsys, *source, *grid, *window, "--walk-forward", spec, "--select-by", select_by, "--results-url", str(results)
    )
    assert code == 0
    walk = result["walk_forward"]
    train_days, test_days = (int(part[:-1]) for part in spec.split(":")[:2])
    folds = reference_folds(result["first_bar"], result["end"], train_days, test_days, spec.endswith("anchored"))
    assert len(folds) >= 3
    assert [(f["train_start"], f["train_end"], f["test_start"], f["test_end"]) for f in walk["folds"]] == folds

    reference = reference_walk_forward(capsys, source, grid, folds, select_by)
    for fold, ref in zip(walk["folds"], reference, strict=True):
        assert fold["params"] == ref["chosen"]["params"]
        assert fold["in_sample"] == {name: ref["chosen"][name] for name in METRIC_NAMES}
        assert fold["out_of_sample"] == {name: ref["test"][name] for name in METRIC_NAMES}

    stitched = math.prod(1 + ref["test"]["total_return"] for ref in reference) - 1
    assert result["oos"]["total_return"] == pytest.approx(stitched, rel=1e-12, abs=1e-12)
    assert result["oos"] == walk["stitched"]
    assert result["oos"]["bars"] == sum(ref["test"]["bars"] for ref in reference)
    assert result["oos"]["trades"] == sum(ref["test"]["trades"] for ref in reference)

    # The equity file is the stitched curve: each fold's test curve times the previous folds' returns.
    table = pq.read_table(results / f"{result['symbol']}.equity.parquet")
    assert table.column_names == ["open_time", "equity", "position", "fold"]
    equity, fold_of = table.column("equity").to_numpy(), table.column("fold").to_numpy()
    scale = 1.0
    for j, ref in enumerate(reference):
        part = equity[fold_of == j]
        assert len(part) == ref["test"]["bars"]
        assert part[0] == pytest.approx(scale, rel=1e-12) and part[-1] == pytest.approx(
            scale * (1 + ref["test"]["total_return"]), rel=1e-12
        )
        scale *= 1 + ref["test"]["total_return"]

    # Efficiency and parameter changes, recomputed from the reference runs.
    ratios = [
        ref["test"]["cagr"] / ref["chosen"]["cagr"]
        for ref in reference
        if ref["chosen"]["cagr"] is not None and ref["chosen"]["cagr"] > 0 and ref["test"]["cagr"] is not None
    ]
    assert walk["efficiency_folds"] == len(ratios)
    assert walk["efficiency_median"] == (pytest.approx(statistics.median(ratios), rel=1e-12) if ratios else None)
    # pooled: the stitched cagr over the folds' mean in-sample cagr
    in_cagr = [ref["chosen"]["cagr"] for ref in reference if ref["chosen"]["cagr"] is not None]
    assert walk["in_sample_cagr"] == pytest.approx(sum(in_cagr) / len(in_cagr), rel=1e-12)
    pooled = result["oos"]["cagr"] / walk["in_sample_cagr"] if walk["in_sample_cagr"] > 0 else None
    assert walk["efficiency"] == (pytest.approx(pooled, rel=1e-12) if pooled is not None else None)
    assert walk["next"] == {"params": reference[-1]["chosen"]["params"], "execution": walk["folds"][-1]["execution"]}
    assert result["next"] == walk["next"] and result["selection"] == "walk_forward"
    changes = sum(a["chosen"]["params"] != b["chosen"]["params"] for a, b in itertools.pairwise(reference))
    assert walk["param_changes"] == changes
    assert walk["param_change_share"] == pytest.approx(changes / (len(reference) - 1))
    return result


@pytest.mark.parametrize(
    "spec, select_by", [("30d:10d", "total_return"), ("30d:10d:anchored", "sharpe"), ("20d:15d", "max_drawdown")]
)
def test_synthetic_candles_match_fold_by_fold_runs(capsys, store, tmp_path, spec, select_by):
    """Synthetic candles from a store: warm-up before every window comes from the store."""
    source = ["--symbol", "BTCUSDT", "--data-url", store]
    grid = ["--strategy", "sma_cross", "--param", "fast=6h,12h,1d", "--param", "slow=12h,2d,8d"]
    result = check_against_reference(
        capsys, tmp_path, source, grid, ["--start", "2024-01-20", "--end", "2024-04-28T05:00"], spec, select_by
    )
    assert result["walk_forward"]["folds"][-1]["test_end"] == "2024-04-28T05:00:00Z"  # a shorter last fold
    # The top level is the plain grid's result over the whole window, as without --walk-forward.
    code, (plain,) = run_json(
        capsys, *source, *grid, "--start", "2024-01-20", "--end", "2024-04-28T05:00", "--select-by", select_by
    )
    assert code == 0
    assert {k: v for k, v in result.items() if k not in ("walk_forward", "oos", *CHOSEN_NEXT)} == {
        k: v for k, v in plain.items() if k not in CHOSEN_NEXT
    }


@pytest.mark.parametrize("spec, select_by", [("90d:30d", "sharpe"), ("90d:30d:anchored", "total_return")])
def test_real_candles_match_fold_by_fold_runs(capsys, shared_data, tmp_path, spec, select_by):
    """Real BTCUSDT candles (with the exchange's 2023-03-24 outage as a gap), from a Parquet copy in tmp."""
    parquet = tmp_path / "btc.parquet"
    pq.write_table(
        read_candle_file(resolve(str(shared_data / "binance_spot_BTCUSDT_1h_misrori.csv"))).to_table(), parquet
    )
    source = ["--symbol", "BTCUSDT", "--input", str(parquet)]
    grid = ["--strategy", "sma_cross", "--param", "fast=1d,2d,4d", "--param", "slow=5d,10d,20d"]
    result = check_against_reference(
        capsys, tmp_path, source, grid, ["--start", "2022-06-01", "--end", "2023-06-01"], spec, select_by
    )
    assert result["oos"]["gaps"] > 0 and result["synthetic"] is False


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--start", "2024-04-05", "--walk-forward", "30d:10d"], "too short for walk-forward 30d:10d"),
        (["--start", "2024-04-01", "--end", "2024-04-11", "--walk-forward", "10d:1d"], "too short"),
        (["--walk-forward", "30d"], "use TRAIN:TEST or TRAIN:TEST:anchored"),
        (["--walk-forward", "30d:10d:rolling"], "use TRAIN:TEST or TRAIN:TEST:anchored"),
        (["--walk-forward", "30d:10d:anchored:x"], "use TRAIN:TEST or TRAIN:TEST:anchored"),
        (["--walk-forward", "abc:10d"], "the training window 'abc' is not a duration"),
        (["--walk-forward", "0d:10d"], "the training window must be 24 to 100000 hourly bars"),
        (["--walk-forward", "30d:-1d"], "the test window must be 24 to 100000 hourly bars"),
        (["--walk-forward", "30d:12h"], "the test window must be 24 to 100000 hourly bars"),
        (["--walk-forward", "5000d:10d"], "the training window must be 24 to 100000 hourly bars"),
        (["--walk-forward", "30d:10d", "--holdout-days", "10"], "either a walk-forward or a hold-out"),
    ],
)
def test_bad_walk_forward_is_exit_2_with_one_line(capsys, store, tmp_path, args, message):
    results = tmp_path / "results"
    grid = ["--strategy", "sma_cross", "--param", "fast=6h,12h", "--param", "slow=2d"]
    code, out, err = run_cli(capsys, "--symbol", "BTCUSDT", "--data-url", store, *grid, *args,
                             "--results-url", str(results))  # fmt: skip
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert not results.exists()


def test_the_first_training_window_must_hold_the_lookback(capsys, tmp_path):
    """A separate run of the first training window would need slow candles: so does the walk-forward."""
    hours = 60 * 24
    close = 100 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.01, hours)))
    path = tmp_path / "candles.parquet"
    pq.write_table(make_candles(np.r_[close[0], close[:-1]], close).to_table(), path)
    base = ["--symbol", "BTCUSDT", "--input", str(path), "--strategy", "sma_cross", "--param", "fast=1d"]
    code, out, err = run_cli(capsys, *base, "--param", "slow=20d", "--walk-forward", "10d:10d")
    assert code == 3 and out == "" and "needs 480 candles up to the end of the first walk-forward training" in err
    code, (result,) = run_json(capsys, *base, "--param", "slow=5d", "--walk-forward", "10d:10d")
    assert code == 0 and len(result["walk_forward"]["folds"]) == 5


# -- a planted overfit ----------------------------------------------------------------------------

PARITY_STRATEGY = '''
import numpy as np
from backtest.params import HOUR_MS
from backtest.strategy import Param, strategy


@strategy("hour_parity", params=[Param("phase", 0, low=0, high=1), Param("copy", 1, low=1, high=2)], warmup=lambda p: 0)
def hour_parity(candles, phase, copy):
    """long after the hours whose parity is `phase` (`copy` changes nothing: a tie)"""
    return (candles.open_time // HOUR_MS) % 2 == phase
'''


def test_a_planted_overfit_has_negative_efficiency(tmp_path):
    """Prices rise on the bars one phase holds and fall on the other's, and the roles swap every 5
    days: each training window's winner is the next test window's loser, by construction. Each
    phase comes twice (`copy`), so every fold also has a tie, which the first combination wins."""
    block, blocks = 5 * 24, 6
    start = EPOCH_MS + 1000 * HOUR_MS
    times = start + np.arange(block * blocks, dtype=np.int64) * HOUR_MS
    held_by_phase_0 = ((times // HOUR_MS) - 1) % 2 == 0  # the position over bar t is the signal at t-1
    swapped = ((times - start) // (block * HOUR_MS)) % 2 == 1
    returns = np.where(held_by_phase_0 != swapped, 0.001, -0.001)
    close = 100 * np.cumprod(1 + returns)
    path = tmp_path / "zigzag.parquet"
    pq.write_table(make_candles(np.r_[100.0, close[:-1]], close, start_ms=start).to_table(), path)
    folder = tmp_path / "strategies"
    folder.mkdir()
    (folder / "parity.py").write_text(PARITY_STRATEGY)

    proc = backtest_process(
        "run", "--symbol", "ZIGZAGUSDT", "--input", str(path), "--strategy", "hour_parity", "--param", "phase=0,1", "--param", "copy=1,2",
        "--fee-bps", "0", "--walk-forward", "5d:5d",
        env={**os.environ, STRATEGY_PATH_ENV: str(folder)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    walk = json.loads(proc.stdout)["walk_forward"]
    folds = walk["folds"]
    assert len(folds) == blocks - 1
    assert [f["params"] for f in folds] == [{"phase": p, "copy": 1} for p in (0, 1, 0, 1, 0)]  # ties: the first
    assert all(f["in_sample"]["cagr"] > 0 > f["out_of_sample"]["cagr"] for f in folds)
    assert walk["efficiency"] < 0 and walk["efficiency_folds"] == len(folds)
    assert walk["param_changes"] == len(folds) - 1 and walk["param_change_share"] == 1.0
    assert walk["stitched"]["total_return"] < 0
