"""The vectorised engine (`backtest.simulation.fills`) against the plain cash-and-units loop of
docs/execution.md (tests/support/execution_reference.py): equity, positions and every trade, to
1e-9, on generated candles (gaps through stops, both levels in one bar, stops on the entry bar,
reversals, ruin, slippage clamps, borrow) and on the real candles in ../shared for every built-in."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtest.data.candles import read_candle_file
from backtest.data.storage import resolve
from backtest.simulation.engine import desired_positions, simulate
from backtest.simulation.execution import Execution
from backtest.strategy import get
from tests.support import backtest_process
from tests.support.execution_reference import desired_of, reference

FEE = 0.001


def engine(o, h, lo, c, d, fee, **options):
    sim = simulate(np.array(o), np.array(h), np.array(lo), np.array(c), np.array([d], dtype=np.int8), fee,
                   Execution(direction="long_short", **options))  # fmt: skip
    return sim


def assert_same(o, h, lo, c, d, fee=FEE, **options) -> None:
    ref = reference(o, h, lo, c, d, fee, **options)
    sim = engine(o, h, lo, c, d, fee, **options)
    assert sim.position[0].tolist() == ref.position
    np.testing.assert_allclose(sim.equity[0], ref.equity, rtol=1e-9, atol=1e-12)
    mine = sim.trades(0)
    assert [(t.entry, t.exit, t.side, t.kind) for t in mine] == [trade[:3] + trade[4:] for trade in ref.trades]
    for got, want in zip(mine, ref.trades, strict=True):
        assert (got.ret is None) == (want[3] is None) and (
            got.ret is None or math.isclose(got.ret, want[3], rel_tol=1e-9, abs_tol=1e-12)
        )


@st.composite
def candles(draw, max_bars: int = 60):
    """OHLC bars with gaps (an open away from the last close), wicks and flat bars."""
    n = draw(st.integers(2, max_bars))
    price, rows = 100.0, []
    for _ in range(n):
        gap = draw(st.sampled_from([0.0, 0.0, 0.02, -0.02, 0.08, -0.08, 0.3]))
        o = price * (1 + gap)
        c = o * (1 + draw(st.floats(-0.06, 0.06)))
        h = max(o, c) * (1 + draw(st.sampled_from([0.0, 0.01, 0.05])))
        lo = min(o, c) * (1 - draw(st.sampled_from([0.0, 0.01, 0.05])))
        rows.append((o, h, lo, c))
        price = c
    return [list(column) for column in zip(*rows, strict=True)]


OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "sl": st.sampled_from([0.01, 0.03, 0.1]),
        "tp": st.sampled_from([0.02, 0.05, 0.5]),
        "trail": st.sampled_from([0.02, 0.05]),
        "size": st.sampled_from([0.25, 0.5, 1.0]),
        "slippage_bps": st.sampled_from([0.0, 5.0, 300.0]),
        "borrow_bps_per_day": st.sampled_from([0.0, 10.0, 900.0]),
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_engine_equals_the_plain_loop(data):
    o, h, lo, c = data.draw(candles(), label="candles")
    targets = data.draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=len(o), max_size=len(o)), label="targets")
    options = data.draw(OPTIONS, label="options")
    assert_same(o, h, lo, c, desired_of(targets, "long_short"), **options)


def test_a_gap_through_a_stop_fills_at_the_open_and_a_bar_reaching_both_levels_is_a_stop():
    o, h, lo, c = [100, 100, 90, 100, 100], [100, 101, 91, 120, 101], [100, 99, 85, 80, 99], [100, 100, 88, 100, 100]
    d = [0, 1, 1, 0, 1]
    ref = reference(o, h, lo, c, d, 0.0, sl=0.05)
    assert ref.trades[0] == (1, 2, 1, pytest.approx(90 / 100 - 1), "stop")  # gapped to 90 < 95: the open, not 95
    assert_same(o, h, lo, c, d, 0.0, sl=0.05)
    both = [0, 0, 0, 1, 1]
    ref = reference(o, h, lo, c, both, 0.0, sl=0.1, tp=0.1)
    assert ref.trades[0][4] == "stop"  # bar 3 reaches 90 and 110 from R = 100: the stop wins
    assert_same(o, h, lo, c, both, 0.0, sl=0.1, tp=0.1)


def test_a_stop_on_the_entry_bar_a_reversal_and_flat_until_the_signal_changes():
    o, h, lo, c = [10, 10, 10, 10, 10, 10], [10, 10.2, 10.2, 10.2, 10.2, 10.2], [10, 9, 9.9, 9.9, 9.9, 9.9], [10] * 6
    d = [0, 1, 1, -1, -1, 1]
    ref = reference(o, h, lo, c, d, FEE, sl=0.05)
    assert ref.trades[0] == (1, 1, 1, pytest.approx(9.5 / 10 * (1 - FEE) ** 2 - 1), "stop")  # on its entry bar
    assert ref.position == [0, 1, 0, -1, -1, 1]  # flat after the stop until d changes; a reversal at bar 5
    assert [t[4] for t in ref.trades] == ["stop", "signal", None]
    assert_same(o, h, lo, c, d, FEE, sl=0.05)


def test_a_short_that_doubles_ruins_the_account():
    o, h, lo, c = [10, 10, 15, 21, 30, 30], [10, 11, 16, 22, 31, 31], [10, 9, 14, 20, 29, 29], [10, 11, 16, 22, 30, 30]
    d = [0, -1, -1, -1, -1, 0]
    ref = reference(o, h, lo, c, d, FEE)
    assert ref.trades == [(1, 3, -1, -1.0, "ruin")] and ref.equity[3:] == [0.0, 0.0, 0.0]
    assert ref.position == [0, -1, -1, -1, 0, 0]
    assert_same(o, h, lo, c, d, FEE)
    sim = engine(o, h, lo, c, d, FEE)
    assert sim.exit_counts[0].tolist() == [0, 0, 0, 1] and sim.closed[0] == 1 and sim.wins[0] == 0


@functools.cache
def real_candles(path: str):
    return read_candle_file(resolve(path)).slice(0, 4000)  # the plain loop is slow: 4,000 real hourly bars


@pytest.fixture
def btc(shared_data):
    return real_candles(str(shared_data / "binance_spot_BTCUSDT_1h_misrori.csv"))


@pytest.mark.parametrize(
    "name", ["sma_trend", "sma_cross", "ema_trend", "momentum", "donchian_breakout", "rsi_reversion"]
)
@pytest.mark.parametrize(
    "direction, options",
    [
        ("long_short", {}),
        ("short", {"sl": 0.03, "tp": 0.08}),
        ("long_short", {"trail": 0.04, "size": 0.5, "slippage_bps": 5.0, "borrow_bps_per_day": 20.0}),
    ],
)
def test_every_builtin_on_real_candles_both_sides(btc, name, direction, options):
    strategy = get(name)
    targets = strategy.checked_signals(btc, [strategy.defaults()]).astype(np.int8)
    assert (targets < 0).any() and (targets > 0).any()  # it has both sides on these candles
    d = desired_positions(targets, 0, len(btc), direction)[0]
    assert d.tolist() == desired_of(targets[0].tolist(), direction)
    ref = reference(btc.open, btc.high, btc.low, btc.close, d.tolist(), FEE, **options)
    sim = simulate(btc.open, btc.high, btc.low, btc.close, d[np.newaxis], FEE, Execution(direction, **options))
    np.testing.assert_allclose(sim.equity[0], ref.equity, rtol=1e-9)
    assert sim.position[0].tolist() == ref.position
    assert sim.exit_counts[0].tolist() == list(ref.exits().values()) and sim.entries[0] == len(ref.trades)
    if direction == "short":
        assert sim.long_entries[0] == 0 and sim.exit_counts[0][1] > 0  # the stops fire


def test_the_cli_reports_the_reference_figures(shared_data, tmp_path):
    """The job's JSON for real candles: total return, drawdown, exposure, trades and exits as the plain loop has them."""
    path = shared_data / "binance_spot_ETHUSDT_1h_misrori.csv"
    candles = read_candle_file(resolve(str(path)))
    end = candles.open_time[3000]
    options = {"sl": 0.05, "tp": 0.15, "trail": 0.08, "slippage_bps": 3.0, "borrow_bps_per_day": 5.0}
    proc = backtest_process(
        "run", "--symbol", "ETHUSDT", "--input", str(path), "--end", str(int(end) // 1000), "--strategy",
        "sma_cross", "--direction", "long_short", "--sl", "5%", "--tp", "15%", "--trail", "8%",
        "--slippage-bps", "3", "--borrow-bps-per-day", "5",
    )  # fmt: skip
    if proc.returncode == 2 and "invalid --end" in proc.stderr:  # an epoch is no ISO time: give one
        from backtest.params import format_time_ms

        proc = backtest_process(
            "run", "--symbol", "ETHUSDT", "--input", str(path), "--end", format_time_ms(int(end)), "--strategy",
            "sma_cross", "--direction", "long_short", "--sl", "5%", "--tp", "15%", "--trail", "8%",
            "--slippage-bps", "3", "--borrow-bps-per-day", "5",
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    part = candles.slice(0, 3000)
    strategy = get("sma_cross")
    targets = strategy.checked_signals(part, [strategy.defaults()]).astype(np.int8)[0].tolist()
    ref = reference(part.open, part.high, part.low, part.close, desired_of(targets, "long_short"), FEE, **options)
    equity = ref.equity
    peak, drawdown = 0.0, 0.0
    for value in equity:
        peak = max(peak, value)
        drawdown = max(drawdown, 1 - value / peak)
    assert math.isclose(result["total_return"], equity[-1] - 1, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(result["max_drawdown"], drawdown, rel_tol=1e-9)
    assert result["exposure"] == sum(p != 0 for p in ref.position) / len(ref.position)
    assert result["trades"] == len(ref.trades) and result["exits"] == ref.exits()
    assert result["short_trades"] == sum(t[2] < 0 for t in ref.trades) > 0
