"""Strategies as code: each built-in against an independent plain-loop reference, `sma_trend`
byte-identical to the code before strategies, grids, memory on a large grid, users' strategies.

The references follow the rules in backtest/strategies/builtins.py's docstring and call nothing under test.
Where the issue promises exactness (`sma_trend`, `sma_cross`, `momentum`, `donchian_breakout`:
comparisons of sums, closes, highs and lows) they are exact: `Fraction` sums or plain float
comparisons. `ema_trend` and `rsi_reversion` are float recursions by definition; their
references do the same float operations in the same order, so they match to the bit, and the
EMA is also checked against the exact rational EMA away from near-ties.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtest.data.candles import Candles
from backtest.data.synthetic import EPOCH_MS, synthetic_candles
from backtest.job import BLOCK_CELLS, RunSpec, backtest, to_json
from backtest.params import DAY_MS, HOUR_MS, format_time_ms, parse_time_ms
from backtest.simulation.metrics import METRIC_NAMES
from backtest.strategy import MAX_COMBINATIONS, get, grid_of
from tests.support import REPO, T0, backtest_process, reference_run, run_cli
from tests.support.strategies import RANGE_POSITION
from tests.test_golden_classic import without_new

GOLDEN = Path(__file__).parent / "golden" / "sma_trend"
BUILTINS = ("sma_trend", "sma_cross", "ema_trend", "momentum", "donchian_breakout", "rsi_reversion")
SEEDED = ("ema_trend", "donchian_breakout", "rsi_reversion")


# -- the references: plain loops from the docstring's rules -----------------------------------


def window_sum(close: list[float], t: int, window: int) -> Fraction:
    """c_{t-window+1} + ... + c_t, exactly."""
    return sum(Fraction(x) for x in close[t - window + 1 : t + 1])


def ref_sma_trend(c: Candles, window: int) -> list[int]:
    close = c.close.tolist()
    return [
        int(t >= window - 1 and Fraction(close[t]) * window > window_sum(close, t, window)) for t in range(len(close))
    ]


def ref_sma_cross(c: Candles, fast: int, slow: int) -> list[int]:
    close = c.close.tolist()
    return [
        int(t >= slow - 1 and window_sum(close, t, fast) / fast > window_sum(close, t, slow) / slow)  # a tie is 0
        for t in range(len(close))
    ]


def ref_momentum(c: Candles, lookback: int) -> list[int]:
    close = c.close.tolist()
    return [int(t >= lookback and close[t] > close[t - lookback]) for t in range(len(close))]


def ref_ema_trend(c: Candles, span: int) -> list[int]:
    close = c.close.tolist()
    out = [0] * len(close)
    if len(close) < span:
        return out
    alpha = 2.0 / (span + 1)
    ema = float(sum(Fraction(x) for x in close[:span]) / span)  # the mean, correctly rounded
    out[span - 1] = int(close[span - 1] > ema)
    for t in range(span, len(close)):
        ema = ema + alpha * (close[t] - ema)
        out[t] = int(close[t] > ema)
    return out


def ref_donchian_breakout(c: Candles, entry: int, exit: int) -> list[int]:
    high, low, close = c.high.tolist(), c.low.tolist(), c.close.tolist()
    out, state = [0] * len(close), 0
    for t in range(max(entry, exit), len(close)):
        if close[t] > max(high[t - entry : t]):
            state = 1
        elif close[t] < min(low[t - exit : t]):
            state = 0
        out[t] = state
    return out


def ref_rsi(close: list[float], period: int) -> list[float | None]:
    rsi: list[float | None] = [None] * len(close)
    gain = loss = 0.0
    for t in range(period, len(close)):
        if t == period:
            changes = [close[i] - close[i - 1] for i in range(1, period + 1)]
            gain = math.fsum(max(x, 0.0) for x in changes) / period
            loss = math.fsum(max(-x, 0.0) for x in changes) / period
        else:
            x = close[t] - close[t - 1]
            gain = (gain * (period - 1) + max(x, 0.0)) / period
            loss = (loss * (period - 1) + max(-x, 0.0)) / period
        rsi[t] = 100.0 if loss == 0 else 100.0 - 100.0 / (1.0 + gain / loss)
    return rsi


def ref_rsi_reversion(c: Candles, period: int, lower: float, upper: float) -> list[int]:
    out, state = [], 0
    for value in ref_rsi(c.close.tolist(), period):
        if value is not None:
            state = 1 if value < lower else 0 if value > upper else state
        out.append(state)
    return out


REFERENCES = {
    "sma_trend": ref_sma_trend,
    "sma_cross": ref_sma_cross,
    "ema_trend": ref_ema_trend,
    "momentum": ref_momentum,
    "donchian_breakout": ref_donchian_breakout,
    "rsi_reversion": ref_rsi_reversion,
}


def candles_of(close, high=None, low=None, hours=None) -> Candles:
    """Candles with these closes (opens: the previous close), hourly or at the given hour offsets."""
    close = np.asarray(close, dtype=np.float64)
    n = len(close)
    opens = np.concatenate((close[:1], close[:-1]))
    high = np.maximum(opens, close) if high is None else np.asarray(high, dtype=np.float64)
    low = np.minimum(opens, close) if low is None else np.asarray(low, dtype=np.float64)
    hours = np.arange(n) if hours is None else np.asarray(hours)
    return Candles(T0 + hours.astype(np.int64) * HOUR_MS, opens, high, low, close, np.ones(n))


# -- each built-in against its reference ------------------------------------------------------

# Prices that are not binary fractions: their sums round, so exact ties (equal SMAs, a close
# equal to its SMA or to an earlier high) only come out right with exact arithmetic.
LEVELS = (0.1, 0.2, 0.3, 0.7, 1.1, 3.3)


@st.composite
def candle_series(draw, max_bars: int = 60) -> Candles:
    n = draw(st.integers(0, max_bars))
    shape = draw(st.sampled_from(["levels", "periodic", "walk", "flat"]))
    if shape == "levels":
        close = draw(st.lists(st.sampled_from(LEVELS), min_size=n, max_size=n))
    elif shape == "periodic":  # windows that are multiples of the period have equal means: ties
        pattern = draw(st.lists(st.sampled_from(LEVELS), min_size=1, max_size=4))
        close = (pattern * n)[:n]
    elif shape == "walk":
        step = st.one_of(st.sampled_from([0.0, 0.01, -0.01]), st.floats(-0.05, 0.05))
        steps = draw(st.lists(step, min_size=n, max_size=n))
        close = np.round(50 * np.cumprod(1 + np.array(steps, dtype=np.float64)), 6)
    else:
        close = [draw(st.floats(0.01, 1e5))] * n
    close = np.asarray(close, dtype=np.float64)
    opens = np.concatenate((close[:1], close[:-1]))
    wick = draw(st.sampled_from([0.0, 0.01]))  # no wick: highs and lows are earlier closes, ties with them
    high, low = np.maximum(opens, close) * (1 + wick), np.minimum(opens, close) * (1 - wick)
    # Gaps in open_time (exchange outages): signals are per bar, gaps pass through.
    hours = np.cumsum(draw(st.lists(st.sampled_from([1, 1, 1, 2, 7]), min_size=n, max_size=n)), dtype=np.int64)
    return candles_of(close, high, low, hours)


def _bars(n: int, low: int) -> st.SearchStrategy[int]:
    return st.integers(low, max(low, n + 3))  # up to beyond the data: all zeros there


def combos_for(name: str, n: int) -> st.SearchStrategy[dict]:
    threshold = st.one_of(st.sampled_from([0.0, 20.0, 30.0, 50.0, 70.0, 100.0]), st.floats(0, 100))
    return {
        "sma_trend": st.fixed_dictionaries({"window": _bars(n, 2)}),
        "sma_cross": st.tuples(_bars(n, 1), _bars(n, 1))
        .filter(lambda fs: fs[0] != fs[1])
        .map(lambda fs: {"fast": min(fs), "slow": max(fs)}),
        "ema_trend": st.fixed_dictionaries({"span": _bars(n, 2)}),
        "momentum": st.fixed_dictionaries({"lookback": _bars(n, 1)}),
        "donchian_breakout": st.fixed_dictionaries({"entry": _bars(n, 1), "exit": _bars(n, 1)}),
        "rsi_reversion": st.tuples(_bars(n, 2), threshold, threshold)
        .filter(lambda p: p[1] < p[2])
        .map(lambda p: {"period": p[0], "lower": p[1], "upper": p[2]}),
    }[name]


@pytest.mark.parametrize("name", BUILTINS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_builtin_matches_its_plain_loop_reference(name, data):
    candles = data.draw(candle_series(), label="candles")
    combos = data.draw(st.lists(combos_for(name, len(candles)), min_size=1, max_size=3), label="combos")
    signals = get(name).signals(candles, combos)  # several combinations in one block, as a run asks
    assert signals.shape == (len(combos), len(candles)) and signals.dtype == np.int8  # targets, both sides
    for row, combo in zip(signals, combos, strict=True):  # the long side as before (tests/test_short_side.py: both)
        assert np.maximum(row, 0).astype(int).tolist() == REFERENCES[name](candles, **combo), combo


@settings(max_examples=60, deadline=None)
@given(candle_series(max_bars=40), st.integers(2, 12))
def test_ema_float_recursion_follows_the_exact_ema(candles, span):
    """The float EMA against the exact rational one (alpha = 2/(span+1) exactly): the signals agree
    on every bar where the close is not within 1e-9 (relative) of the exact EMA; the recursion's
    rounding (~1e-14 here) can only decide those near-ties (flat prices: test_a_flat_price_never_signals)."""
    close = candles.close.tolist()
    signal = get("ema_trend").signals(candles, [{"span": span}])[0]
    if len(close) < span:
        assert not signal.any()
        return
    alpha = Fraction(2, span + 1)
    ema = sum(Fraction(x) for x in close[:span]) / span
    for t in range(span - 1, len(close)):
        if t >= span:
            ema = alpha * Fraction(close[t]) + (1 - alpha) * ema
        gap = Fraction(close[t]) - ema
        if abs(gap) > Fraction(close[t]) * Fraction(1, 10**9):
            assert (signal[t] == 1) == (gap > 0), t
    assert not signal[: span - 1].any()


@pytest.mark.parametrize(
    "pattern, fast, slow",
    [((0.1, 0.2), 2, 4), ((0.1, 0.2), 2, 6), ((0.1, 0.7, 0.3), 3, 9), ((0.3, 0.6, 0.1), 3, 9), ((1.1, 2.2, 3.3), 3, 6)],
)
def test_sma_cross_equal_means_are_a_tie(pattern, fast, slow):
    """Windows that are multiples of a repeating pattern's period have exactly equal means: a tie,
    signal 0, where float means (the naive computation) say fast > slow on some bars."""
    close = np.array(pattern * 40)
    signal = get("sma_cross").signals(candles_of(close), [{"fast": fast, "slow": slow}])[0]
    assert not signal.any()
    assert ref_sma_cross(candles_of(close), fast, slow) == [0] * len(close)
    naive = [
        close[t - fast + 1 : t + 1].mean() > close[t - slow + 1 : t + 1].mean() for t in range(slow - 1, len(close))
    ]
    sums = np.cumsum(np.concatenate(([0.0], close)))
    by_sums = [
        (sums[t + 1] - sums[t + 1 - fast]) / fast > (sums[t + 1] - sums[t + 1 - slow]) / slow
        for t in range(slow - 1, len(close))
    ]
    assert any(naive) or any(by_sums), "the pattern must be a tie that float arithmetic gets wrong"


@pytest.mark.parametrize("price", [0.1, 0.3, 1.1, 3.3, 99.99, 12345.678, 1e-5])
def test_a_flat_price_never_signals(price):
    """No built-in goes long on a flat price (for ema_trend this needs its exact-mean seed and its
    recursion order: a float seed can leave the EMA a rounding error below the price, for about one
    price and span in ten), nor short, but rsi_reversion: with no loss its RSI is 100, above any
    `upper`, which is its short side's entry."""
    candles = candles_of([price] * 400)
    for name, spec in [
        ("sma_trend", {"window": "2:40:1"}),
        ("sma_cross", {"fast": "1:10:1", "slow": "11:40:3"}),
        ("ema_trend", {"span": "2:60:1"}),
        ("momentum", {"lookback": "1:40:1"}),
        ("donchian_breakout", {"entry": "1:10:3", "exit": "1:10:3"}),
        ("rsi_reversion", {"period": "2:20:3"}),
    ]:
        grid = grid_of(name, spec)
        signals = grid.strategy.signals(candles, grid.combos)
        assert signals.shape == (len(grid.combos), 400) and not (signals > 0).any(), name
        assert (signals < 0).any() == (name == "rsi_reversion"), name


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("bars", [0, 1, 2])
def test_very_short_data_and_windows_longer_than_the_data(name, bars):
    """0, 1 or 2 candles, with the smallest parameters and with the defaults (longer than the data):
    a (k, n) array, zero wherever the signal is undefined, as the reference says."""
    candles = candles_of([1.0, 2.0][:bars])
    strategy = get(name)
    smallest = {p.name: int(p.low) if p.bars else p.default for p in strategy.params}  # e.g. fast 1, slow 2
    combos = [smallest, strategy.defaults()]
    signals = strategy.signals(candles, combos)
    assert signals.shape == (2, bars) and signals.dtype == np.int8
    assert not signals[1].any()  # the defaults are days long: undefined on 2 bars
    for row, combo in zip(signals, combos, strict=True):
        assert np.maximum(row, 0).astype(int).tolist() == REFERENCES[name](candles, **combo)
    if bars == 2 and name in ("sma_trend", "sma_cross", "momentum", "ema_trend"):
        assert signals[0].tolist() == [0, 1]  # 2 is above 1 and above the 2-bar mean 1.5


@pytest.mark.parametrize("name", BUILTINS)
def test_gaps_in_open_time_pass_through(name):
    """Signals are per bar: the same prices with outages between candles give the same signals."""
    candles = synthetic_candles("ETHUSDT", EPOCH_MS, EPOCH_MS + 30 * DAY_MS)
    rng = np.random.default_rng(3)
    hours = np.cumsum(rng.choice([1, 1, 1, 1, 3, 30], size=len(candles)))
    gapped = Candles(
        EPOCH_MS + hours * HOUR_MS, *(getattr(candles, k) for k in ("open", "high", "low", "close", "volume"))
    )
    grid = grid_of(name, {p.name: "6,1d" for p in get(name).params if p.bars})
    a, b = grid.strategy.signals(candles, grid.combos), grid.strategy.signals(gapped, grid.combos)
    np.testing.assert_array_equal(a, b)
    assert a.any()


# -- sma_trend byte-identical to the code before strategies ------------------------------------
#
# tests/golden/sma_trend/ holds the output of 46943e2 (the last commit before strategies as code)
# for these two commands on synthetic ETHUSDT candles (re-made from that commit and compared
# byte for byte when the files were added): single.json is its stdout and result file.


def eth_parquet(tmp_path_factory, days: int) -> Path:
    """`days` of synthetic ETHUSDT candles from the synthetic epoch, as a Parquet file in a new folder."""
    path = tmp_path_factory.mktemp("eth") / "ETHUSDT.parquet"
    pq.write_table(synthetic_candles("ETHUSDT", EPOCH_MS, EPOCH_MS + days * DAY_MS).to_table(), path)
    return path


@pytest.fixture(scope="module")
def golden_input(tmp_path_factory) -> Path:
    return eth_parquet(tmp_path_factory, 200)


def run_golden(golden_input: Path, results: Path, *options: str) -> subprocess.CompletedProcess:
    """`python -m backtest run` of ETHUSDT from 2017-02-01 with `options`, as the golden files were made."""
    proc = backtest_process(
        "run", "--symbol", "ETHUSDT", "--input", str(golden_input), "--start", "2017-02-01", *options,
        "--results-url", str(results),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


def test_sma_trend_single_run_is_byte_identical_to_before(golden_input, tmp_path):
    results = tmp_path / "single"
    proc = run_golden(golden_input, results, "--window", "15d")
    # byte for byte but the keys the execution options added (tests/test_golden_classic.py)
    new, old = json.loads(proc.stdout), json.loads((GOLDEN / "single.json").read_text())
    assert without_new(new) == old and list(without_new(new)) == list(old)
    assert to_json(without_new(new)) + "\n" == (GOLDEN / "single.json").read_text()
    assert json.loads((results / "ETHUSDT.json").read_text()) == new
    assert (results / "ETHUSDT.equity.parquet").read_bytes() == (GOLDEN / "single.equity.parquet").read_bytes()


def test_sma_trend_sweep_has_the_same_figures_as_before(golden_input, tmp_path):
    """The sweep's figures are unchanged to the bit; only the fields that named windows changed:
    params (now the chosen window's) and best_window -> best, the sweep's values -> grid, each
    row's window -> params."""
    results = tmp_path / "sweep"
    proc = run_golden(golden_input, results, "--window", "5d,10d,15d", "--holdout-days", "30", "--select-by", "sharpe")
    new, old = json.loads(proc.stdout), json.loads((GOLDEN / "sweep.json").read_text())
    new["grid"].pop("execution")
    new = without_new(new)  # the keys the execution options added (tests/test_golden_classic.py)
    assert (results / "ETHUSDT.equity.parquet").read_bytes() == (GOLDEN / "sweep.equity.parquet").read_bytes()

    same = ("symbol", "strategy", "start", "end", "first_bar", "last_bar", "warmup_bars", "data_source", "synthetic")
    for key in (*same, *(m for m in METRIC_NAMES if m in old), "split", "oos"):  # the metrics of before
        assert new[key] == old[key], key
    assert set(new) == set(old) - {"best_window", "best_window_bars"} | {"grid", "best"}
    best = {"window": old["best_window"], "window_bars": old["best_window_bars"]}
    assert new["best"] == best and new["params"] == {**best, "fee_bps": old["params"]["fee_bps"]}
    assert new["grid"] == {
        "values": {"window": old["params"]["window"]},
        "combinations": len(old["params"]["windows"]),
        "skipped": 0,
        "holdout_days": old["params"]["holdout_days"],
        "select_by": old["params"]["select_by"],
    }
    assert len(new["sweep"]) == len(old["sweep"]) == 3
    for row, before in zip(new["sweep"], old["sweep"], strict=True):
        assert row["params"] == {"window": before["window"], "window_bars": before["window_bars"]}
        assert {k: v for k, v in row.items() if k != "params"} == {
            k: v for k, v in before.items() if k not in ("window", "window_bars")
        }


# -- grids --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eth_file(tmp_path_factory) -> Path:
    return eth_parquet(tmp_path_factory, 120)


# The window starts 30 days in, so each single run reads only its own warm-up while the grid reads
# the longest: a grid computes each combination from its own warm-up start (job.signal_blocks),
# which matters for seeded strategies, whose signals depend on where reading starts.
GRIDS = [
    ("sma_trend", {"window": "12h,2d,5d"}, 30, 0),
    ("sma_cross", {"fast": "6,12,1d", "slow": "12,2d,5d"}, 30, 2),  # 12>=12 and 1d>=12 rejected
    ("momentum", {"lookback": "1,12,3d"}, 30, 0),
    ("ema_trend", {"span": "12h,1d,2d"}, 30, 0),
    ("donchian_breakout", {"entry": "12h,2d", "exit": "12,1d"}, 30, 0),
    ("rsi_reversion", {"period": "14,20", "lower": "20,30", "upper": "30,70"}, 30, 2),  # 30 < 30 rejected
]


@pytest.mark.parametrize("name, spec, start_day, skipped", GRIDS, ids=[g[0] for g in GRIDS])
def test_every_grid_row_equals_the_single_run_of_its_params(eth_file, name, spec, start_day, skipped):
    start = EPOCH_MS + start_day * DAY_MS

    def run(grid_spec: dict) -> dict:
        return backtest(RunSpec("ETHUSDT", grid_of(name, grid_spec), 10.0, start_ms=start, input_url=str(eth_file)))[0]

    result = run(spec)
    values = [len(v.split(",")) for v in spec.values()]
    assert result["grid"]["combinations"] == math.prod(values) - skipped and result["grid"]["skipped"] == skipped
    assert len(result["sweep"]) == result["grid"]["combinations"]
    for row in result["sweep"]:
        single = run({k: str(v) for k, v in row["params"].items() if not k.endswith("_bars")})
        assert single["params"] == {**row["params"], "fee_bps": 10.0}
        assert "sweep" not in single and "grid" not in single
        for metric in METRIC_NAMES:
            assert row[metric] == single[metric], (row["params"], metric)
    chosen = max(result["sweep"], key=lambda row: row["total_return"])  # the first of equals
    assert result["best"] == chosen["params"] and result["params"] == {**chosen["params"], "fee_bps": 10.0}
    assert all(result[m] == chosen[m] for m in METRIC_NAMES)


def test_seeded_grid_rows_equal_single_runs_on_real_btcusdt(shared_data):
    """RSI states last thousands of bars on real prices, so where reading starts matters: each
    grid row must still be computed from its own warm-up start, as its single run is."""
    csv = str(shared_data / "binance_spot_BTCUSDT_1h_misrori.csv")
    start, end = parse_time_ms("2022-01-01"), parse_time_ms("2023-01-01")

    def run(spec: dict) -> dict:
        return backtest(RunSpec("BTCUSDT", grid_of("rsi_reversion", spec), 10.0, start, end, input_url=csv))[0]

    result = run({"period": "14,20h,2d", "lower": "20,30", "upper": "70,80"})
    assert len(result["sweep"]) == 12
    for row in result["sweep"]:
        single = run({k: str(v) for k, v in row["params"].items() if not k.endswith("_bars")})
        for metric in METRIC_NAMES:
            assert row[metric] == single[metric], (row["params"], metric)


@pytest.mark.parametrize(
    "name, spec", [("sma_cross", {"fast": "6,12", "slow": "2d,5d"}), ("momentum", {"lookback": "1,12"})]
)
def test_grid_rows_with_a_holdout_equal_single_runs_of_each_part(eth_file, name, spec):
    def run(grid_spec: dict, start_day: int, end_day: int, holdout: int = 0) -> dict:
        grid = grid_of(name, grid_spec)
        window = {"start_ms": EPOCH_MS + start_day * DAY_MS, "end_ms": EPOCH_MS + end_day * DAY_MS}
        return backtest(RunSpec("ETHUSDT", grid, 10.0, **window, input_url=str(eth_file), holdout_days=holdout))[0]

    result = run(spec, 30, 100, holdout=20)
    assert result["split"] == format_time_ms(EPOCH_MS + 80 * DAY_MS)
    for row in result["sweep"]:
        params = {k: str(v) for k, v in row["params"].items() if not k.endswith("_bars")}
        inside, outside = run(params, 30, 80), run(params, 80, 100)
        assert all(row[m] == inside[m] for m in METRIC_NAMES) and row["oos"] == {m: outside[m] for m in METRIC_NAMES}


@pytest.mark.parametrize(
    "args, combinations, skipped",
    [
        (["--strategy", "sma_cross", "--param", "fast=1d,5d", "--param", "slow=1d,5d"], 1, 3),
        (["--strategy", "sma_cross", "--param", "fast=12:48:12", "--param", "slow=24:48:12"], 6, 6),
        (["--strategy", "rsi_reversion", "--param", "lower=30,70", "--param", "upper=30,70"], 1, 3),
        (["--strategy", "rsi_reversion", "--param", "lower=20:80:20", "--param", "upper=60"], 2, 2),
    ],
)
def test_rejected_combinations_are_skipped_and_counted(capsys, eth_file, args, combinations, skipped):
    code, out, err = run_cli(capsys, "--symbol", "ETHUSDT", "--input", str(eth_file), "--start", "2017-02-01", *args)
    assert code == 0, err
    result = json.loads(out)
    assert result["grid"]["combinations"] == combinations and result["grid"]["skipped"] == skipped
    assert len(result["sweep"]) == combinations


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strategy", "sma_cross", "--param", "span=5d"], "strategy sma_cross has no parameter 'span' (its parameters: fast, slow)"),
        (["--strategy", "sma_cross", "--param", "fast=abc"], "invalid fast 'abc': use bars (360) or a duration"),
        (["--strategy", "rsi_reversion", "--param", "lower=abc"], "invalid lower 'abc': must be a number"),
        (["--strategy", "rsi_reversion", "--param", "upper=nan"], "invalid upper 'nan': must be finite"),
        (["--strategy", "rsi_reversion", "--param", "lower=-1"], "invalid lower '-1': must be from 0 to 100"),
        (["--strategy", "sma_cross", "--param", "slow=100001"], "invalid slow '100001': must be from 2 to 100000 bars"),
        (["--strategy", "sma_trend", "--param", "window=1"], "invalid window '1': must be from 2 to 100000 bars"),
        (["--strategy", "sma_cross", "--param", "fast=5d:1d:1d"], "invalid range '5d:1d:1d': the stop is before the start"),
        (["--strategy", "sma_cross", "--param", "fast=1d:2d"], "invalid range '1d:2d': use start:stop:step"),
        (["--strategy", "sma_cross", "--param", "fast=1d:2d:0"], "invalid fast step '0'"),
        (["--strategy", "rsi_reversion", "--param", "lower=10:20:0"], "invalid lower step '0': must be positive"),
        (["--strategy", "momentum", "--window", "5d"], "--window is sma_trend's window: give --param instead for momentum"),
        (["--window", "5d", "--param", "window=2d"], "--window is sma_trend's window"),
        (["--strategy", "sma_cross", "--param", "fast"], "invalid --param 'fast': use KEY=VALUES"),
        (["--strategy", "sma_cross", "--param", "fast=1d", "--param", "fast=2d"], "--param fast is given twice"),
        (["--strategy", "nope"], "unknown strategy 'nope': one of "),
        (["--strategy", "sma_cross", "--param", "fast=1:400:1", "--param", "slow=2:401:1"],
         f"the grid of sma_cross has 160,000 combinations: at most {MAX_COMBINATIONS:,}"),
        # A grid whose every combination is rejected.
        (["--strategy", "sma_cross", "--param", "fast=5d", "--param", "slow=1d,2d"],
         "no valid combination of sma_cross's parameters: fast (120 bars) must be shorter than slow (24 bars)"),
        (["--strategy", "rsi_reversion", "--param", "lower=70", "--param", "upper=30"],
         "no valid combination of rsi_reversion's parameters: lower (70) must be below upper (30)"),
    ],
)  # fmt: skip
def test_bad_parameters_exit_2_with_one_line(capsys, eth_file, tmp_path, args, message):
    results = tmp_path / "results"
    code, out, err = run_cli(
        capsys, "--symbol", "ETHUSDT", "--input", str(eth_file), "--results-url", str(results), *args
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not results.exists()


# -- memory stays bounded on a 10,000-combination grid ---------------------------------------------

PER_ROW_BYTES = (
    8 * 1024
)  # a sweep row kept for the result: ~13 metrics + params as dicts and JSON text (~4 KiB measured)
BYTES_PER_CELL = 48  # per (combination x bar) of one block: signals, positions, equity, factors, returns, drawdowns


def _peak_rss_bytes(*args: str) -> tuple[int, dict]:
    """Peak RSS of `python -m backtest ARGS` run in a fresh wrapper process, whose only child it is."""
    wrapper = textwrap.dedent("""
        import resource, subprocess, sys
        done = subprocess.run([sys.executable, "-m", "backtest", *sys.argv[1:]], capture_output=True, text=True)
        sys.stderr.write(done.stderr)
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # KiB on Linux
        print(done.returncode)
        print(done.stdout, end="")
    """)
    proc = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True, cwd=REPO, timeout=120)
    peak_kib, code, out = proc.stdout.split("\n", 2)
    assert int(code) == 0, proc.stderr
    return int(peak_kib) * 1024, json.loads(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KiB on Linux only")
def test_memory_is_bounded_on_a_10000_combination_grid(tmp_path):
    """sma_cross fast x slow = 100 x 100 on 3,000 bars: 30 M (combination x bar) cells, ~1.4 GB if a
    block held them all. Blocks hold at most BLOCK_CELLS (2 M) cells, so from 1,000 combinations on
    (3 M cells: full blocks) peak memory grows only by the sweep rows the result keeps."""
    path = tmp_path / "ETHUSDT.parquet"
    pq.write_table(synthetic_candles("ETHUSDT", EPOCH_MS, EPOCH_MS + 3000 * HOUR_MS).to_table(), path)
    base = ("run", "--symbol", "ETHUSDT", "--input", str(path), "--strategy", "sma_cross", "--param", "fast=1:100:1")
    peaks = {}
    for count, slow in ((100, "101"), (1_000, "101:110:1"), (10_000, "101:200:1")):
        peaks[count], result = _peak_rss_bytes(*base, "--param", f"slow={slow}")
        assert result["grid"]["combinations"] == len(result["sweep"]) == count
    assert BLOCK_CELLS < 3000 * 1_000  # the 1,000 grid already fills whole blocks
    mib = {count: round(peak / 2**20) for count, peak in peaks.items()}
    assert peaks[10_000] - peaks[1_000] <= 9_000 * PER_ROW_BYTES, mib
    assert peaks[10_000] - peaks[100] <= BLOCK_CELLS * BYTES_PER_CELL + 9_900 * PER_ROW_BYTES, mib
    assert peaks[10_000] < 300 * 2**20, mib  # the budget for a large grid
    print(f"peak RSS by grid size (MiB): {mib}")


# -- users' strategies --------------------------------------------------------------------------

FUNCTION_STYLE = '''
"""A user's strategy as a function: long while the close is above the highest earlier close of
the last `lookback` bars."""
import numpy as np

from backtest.strategy import Param, strategy


@strategy("new_high", params=[Param("lookback", "1d", low=1, high=10_000, bars=True)], warmup=lambda p: p["lookback"])
def new_high(candles, lookback):
    """long on a close above the last `lookback` closes"""
    close = candles.close
    out = np.zeros(len(close), dtype=bool)
    for t in range(lookback, len(close)):
        out[t] = close[t] > close[t - lookback : t].max()
    return out
'''

CLASS_STYLE = RANGE_POSITION  # a class, vectorised over combinations (tests/support/strategies.py)


def ref_new_high(c: Candles, lookback: int) -> list[int]:
    close = c.close.tolist()
    return [int(t >= lookback and close[t] > max(close[t - lookback : t])) for t in range(len(close))]


def ref_range_position(c: Candles, window: int, level: float) -> list[int]:
    out = [0] * len(c)
    for t in range(window - 1, len(c)):
        high, low = max(c.high[t - window + 1 : t + 1].tolist()), min(c.low[t - window + 1 : t + 1].tolist())
        out[t] = int(float(c.close[t]) - low > level * (high - low))
    return out


def write_modules(folder: Path, **modules: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in modules.items():
        (folder / f"{name}.py").write_text(text)
    return folder


def with_strategies(*folders: Path) -> dict[str, str]:
    return {**os.environ, "BACKTEST_STRATEGY_PATH": os.pathsep.join(str(f) for f in folders)}


@pytest.mark.parametrize(
    "strategy_name, params, warmup, reference",
    [
        ("new_high", {"lookback": 24}, 24, ref_new_high),
        ("range_position", {"window": 12, "level": 0.7}, 11, ref_range_position),
    ],
)
def test_a_users_strategy_runs_through_the_cli(eth_file, tmp_path, strategy_name, params, warmup, reference):
    folder = write_modules(tmp_path / "mine", new_high=FUNCTION_STYLE)
    other = write_modules(tmp_path / "more", range_position=CLASS_STYLE)  # a second folder on the path
    results = tmp_path / "results"
    proc = backtest_process(
        "run", "--symbol", "ETHUSDT", "--input", str(eth_file), "--start", "2017-01-10", "--strategy", strategy_name,
        *(f"--param={k}={v}" for k, v in params.items()), "--fee-bps", "10", "--results-url", str(results),
        env=with_strategies(folder, other),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["strategy"] == strategy_name and result["warmup_bars"] == warmup

    candles = synthetic_candles("ETHUSDT", EPOCH_MS, EPOCH_MS + 120 * DAY_MS)
    first = 9 * 24 - warmup  # the candles the run read start here (--start is 9 days in)
    read = candles.slice(first, len(candles))
    signal = reference(read, **params)
    positions, equity = reference_run(read.open.tolist(), read.close.tolist(), signal, warmup, 0.001)
    stored = pq.read_table(results / "ETHUSDT.equity.parquet")
    assert stored.column("position").to_pylist() == positions
    np.testing.assert_allclose(stored.column("equity").to_numpy(), equity, rtol=1e-12)
    assert result["trades"] == sum(1 for a, b in pairwise(positions) if b and not a) > 3
    assert result["exposure"] == sum(positions) / len(positions) and result["bars"] == len(positions)
    assert result["total_return"] == pytest.approx(equity[-1] - 1, rel=1e-12)


def test_a_users_grid_and_list_strategies(eth_file, tmp_path):
    folder = write_modules(tmp_path / "mine", new_high=FUNCTION_STYLE, range_position=CLASS_STYLE)
    env = with_strategies(folder)
    proc = backtest_process(
        "run", "--symbol", "ETHUSDT", "--input", str(eth_file), "--start", "2017-01-10", "--strategy", "range_position",
        "--param", "window=6,1d", "--param", "level=0.25:0.75:0.25", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [row["params"] for row in result["sweep"]] == [
        {"window": w, "window_bars": bars, "level": level}
        for w, bars in (("6", 6), ("1d", 24))
        for level in (0.25, 0.5, 0.75)
    ]
    listed = backtest_process("list-strategies", env=env)
    assert listed.returncode == 0, listed.stderr
    by_name = {item["name"]: item for item in json.loads(listed.stdout)}
    assert set(BUILTINS) | {"new_high", "range_position"} <= set(by_name)
    assert by_name["new_high"]["description"] == "long on a close above the last `lookback` closes"
    assert by_name["range_position"]["params"] == [
        {"name": "window", "type": "int", "bars": True, "default": "2d", "low": 2, "high": 10_000, "help": ""},
        {"name": "level", "type": "float", "bars": False, "default": 0.5, "low": 0.0, "high": 1.0, "help": ""},
    ]


def _one_error_line(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code and proc.stdout == "" and len(lines) == 1, proc
    return lines[0]


def test_a_module_that_fails_to_import_exits_5_naming_the_file(eth_file, tmp_path):
    folder = write_modules(tmp_path / "mine", new_high=FUNCTION_STYLE, broken='raise RuntimeError("no\\nluck")\n')
    for args in (("list-strategies",), ("run", "--symbol", "ETHUSDT", "--input", str(eth_file))):
        line = _one_error_line(backtest_process(*args, env=with_strategies(folder)), code=5)  # the strategy's fault
        assert line == f"error: strategy module {folder / 'broken.py'} failed to import: RuntimeError: no luck"
    syntax = write_modules(tmp_path / "syntax", bad="def broken(:\n")
    line = _one_error_line(backtest_process("list-strategies", env=with_strategies(syntax)), code=5)
    assert str(syntax / "bad.py") in line and "SyntaxError" in line


def test_two_strategies_of_one_name_exit_2(tmp_path):
    twin = FUNCTION_STYLE.replace('"new_high"', '"twin"')
    folder = write_modules(tmp_path / "mine", a_twin=twin, b_twin=twin)
    line = _one_error_line(backtest_process("list-strategies", env=with_strategies(folder)))
    assert line.startswith("error: two strategies are named 'twin'") and "a_twin.py" in line and "b_twin.py" in line
    builtin_name = CLASS_STYLE.replace('"range_position"', '"sma_trend"')
    folder = write_modules(tmp_path / "clash", clash=builtin_name)
    line = _one_error_line(backtest_process("list-strategies", env=with_strategies(folder)))
    assert line.startswith("error: two strategies are named 'sma_trend'") and "builtins.py" in line


def test_a_missing_strategy_folder_exits_2(tmp_path):
    line = _one_error_line(backtest_process("list-strategies", env=with_strategies(tmp_path / "nowhere")))
    assert line == f"error: BACKTEST_STRATEGY_PATH folder {tmp_path / 'nowhere'} does not exist"


def test_a_long_lived_process_loads_again_once_a_broken_module_is_fixed(tmp_path):
    """As in a process that lists the strategies again and again (the DAG's parser): after a failed
    load, the modules that did import are imported again, which is no clash of names."""
    folder = write_modules(tmp_path / "mine", new_high=FUNCTION_STYLE, range_position=CLASS_STYLE, zz_broken="1 / 0\n")
    script = textwrap.dedent(f"""
        from pathlib import Path
        from backtest import strategy
        from backtest.errors import InputError
        try:
            strategy.names()
        except InputError as exc:
            print("first:", exc)
        Path({str(folder / "zz_broken.py")!r}).write_text("FIXED = True\\n")
        print("second:", strategy.names())
    """)
    env = with_strategies(folder)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first.startswith("first: strategy module") and "ZeroDivisionError" in first
    listed = backtest_process("list-strategies")  # the project's own strategies, without the user folder
    project = [item["name"] for item in json.loads(listed.stdout)]
    assert second == f"second: {sorted([*project, 'new_high', 'range_position'])}"
