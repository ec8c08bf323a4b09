"""The built-ins' short side (issue 19, point 2): each built-in's int8 targets against an
independent plain-loop reference of both sides, and its long side max(target, 0) against the
long/flat rules it had before (tests/test_strategies.py's references, unchanged), on synthetic
candles (hypothesis: ties, flat stretches, gaps) and on the real candles of every pair in
../shared.

The references follow the issue's rules and call nothing under test: sums are exact (`Fraction`),
closes, highs and lows are compared as floats, the EMA and the RSI are the float recursions of
the definitions (tests/test_strategies.py checks them against exact arithmetic).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtest.data.candles import Candles, read_candle_file
from backtest.data.storage import resolve
from backtest.strategy import LONG_SHORT, TARGET_DTYPE, describe_all, get, grid_of
from tests.test_strategies import BUILTINS, REFERENCES, candle_series, candles_of, combos_for, ref_rsi


def sign(x) -> int:
    return (x > 0) - (x < 0)


def exact_prefix(close: list[float]) -> list[Fraction]:
    """[0, c_0, c_0 + c_1, ...], exactly."""
    sums = [Fraction(0)]
    for x in close:
        sums.append(sums[-1] + Fraction(x))
    return sums


# -- the references: both sides, plain loops from the rules ---------------------------


def ref_sma_trend(c: Candles, window: int) -> list[int]:
    """+1 when c_t > SMA_t, -1 when c_t < SMA_t, 0 on a tie (exactly), for t >= window - 1."""
    close = c.close.tolist()
    sums = exact_prefix(close)
    out = [0] * len(close)
    for t in range(window - 1, len(close)):
        out[t] = sign(Fraction(close[t]) * window - (sums[t + 1] - sums[t + 1 - window]))
    return out


def ref_sma_cross(c: Candles, fast: int, slow: int) -> list[int]:
    """sign(SMA_fast - SMA_slow), exactly, for t >= slow - 1."""
    close = c.close.tolist()
    sums = exact_prefix(close)
    out = [0] * len(close)
    for t in range(slow - 1, len(close)):
        out[t] = sign((sums[t + 1] - sums[t + 1 - fast]) / fast - (sums[t + 1] - sums[t + 1 - slow]) / slow)
    return out


def ref_ema_trend(c: Candles, span: int) -> list[int]:
    close = c.close.tolist()
    out = [0] * len(close)
    if len(close) < span:
        return out
    alpha = 2.0 / (span + 1)
    ema = float(sum(Fraction(x) for x in close[:span]) / span)  # the mean, correctly rounded
    for t in range(span - 1, len(close)):
        if t >= span:
            ema = ema + alpha * (close[t] - ema)
        out[t] = 1 if close[t] > ema else -1 if close[t] < ema else 0
    return out


def ref_momentum(c: Candles, lookback: int) -> list[int]:
    close = c.close.tolist()
    out = [0] * len(close)
    for t in range(lookback, len(close)):
        out[t] = 1 if close[t] > close[t - lookback] else -1 if close[t] < close[t - lookback] else 0
    return out


def donchian_states(c: Candles, entry: int, exit: int) -> list[tuple[int, int]]:
    """(long, short) state per bar. Long: 1 above the entry-bar high, 0 below the exit-bar low;
    short: 1 below the entry-bar low, 0 above the exit-bar high; both 0 before max(entry, exit)."""
    high, low, close = c.high.tolist(), c.low.tolist(), c.close.tolist()
    states, long_, short = [(0, 0)] * len(close), 0, 0
    for t in range(max(entry, exit), len(close)):
        if close[t] > max(high[t - entry : t]):
            long_ = 1
        elif close[t] < min(low[t - exit : t]):
            long_ = 0
        if close[t] < min(low[t - entry : t]):
            short = 1
        elif close[t] > max(high[t - exit : t]):
            short = 0
        states[t] = (long_, short)
    return states


def ref_donchian_breakout(c: Candles, entry: int, exit: int) -> list[int]:
    """+1 while the long state is 1, else -1 while the short state is 1, else 0."""
    return [1 if long_ else -1 if short else 0 for long_, short in donchian_states(c, entry, exit)]


def ref_rsi_reversion(c: Candles, period: int, lower: float, upper: float) -> list[int]:
    """Long state: 1 below `lower`, 0 above `upper`; short state: 1 above `upper`, 0 below
    `lower`; target long - short."""
    out, long_, short = [], 0, 0
    for value in ref_rsi(c.close.tolist(), period):
        if value is not None:
            long_ = 1 if value < lower else 0 if value > upper else long_
            short = 1 if value > upper else 0 if value < lower else short
        out.append(long_ - short)
    return out


TARGET_REFERENCES = {
    "sma_trend": ref_sma_trend,
    "sma_cross": ref_sma_cross,
    "ema_trend": ref_ema_trend,
    "momentum": ref_momentum,
    "donchian_breakout": ref_donchian_breakout,
    "rsi_reversion": ref_rsi_reversion,
}


def check_against_references(name: str, candles: Candles, combos: list[dict]) -> np.ndarray:
    """The built-in's targets of `combos` equal the both-sides reference, and their long side the
    long/flat reference of before; returns the targets."""
    targets = get(name).checked_signals(candles, combos)  # the way the job calls it
    assert targets.dtype == TARGET_DTYPE and targets.shape == (len(combos), len(candles))
    for row, combo in zip(targets, combos, strict=True):
        expected = TARGET_REFERENCES[name](candles, **combo)
        assert row.tolist() == expected, combo
        assert np.maximum(row, 0).tolist() == REFERENCES[name](candles, **combo), combo  # today's long side
    return targets


# -- synthetic candles ----------------------------------------------------------------------------


def test_every_builtin_declares_both_sides():
    described = {item["name"]: item for item in describe_all()}
    for name in BUILTINS:
        assert get(name).sides == LONG_SHORT == ("long", "short")
        assert described[name]["sides"] == ["long", "short"]
    assert described["vwma_trend"]["sides"] == ["long"]  # the example user strategy stays long-only


@pytest.mark.parametrize("name", BUILTINS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_targets_match_the_plain_loop_reference_of_both_sides(name, data):
    candles = data.draw(candle_series(), label="candles")
    combos = data.draw(st.lists(combos_for(name, len(candles)), min_size=1, max_size=3), label="combos")
    check_against_references(name, candles, combos)


@pytest.mark.parametrize("name", BUILTINS)
def test_a_falling_price_is_short_and_a_rising_one_long(name):
    """A price that falls for 300 bars then rises for 300: every built-in goes short in the fall
    and long in the rise (a mirror of the long rule, not just "not long")."""
    close = np.concatenate((np.linspace(200.0, 100.0, 300), np.linspace(100.5, 250.0, 300)))
    wiggle = 1 + 0.002 * np.sin(np.arange(600))  # rsi_reversion needs some up and down bars
    candles = candles_of(close * wiggle)
    combo = {
        "sma_trend": {"window": 24},
        "sma_cross": {"fast": 6, "slow": 24},
        "ema_trend": {"span": 24},
        "momentum": {"lookback": 12},
        "donchian_breakout": {"entry": 24, "exit": 12},
        "rsi_reversion": {"period": 14, "lower": 45.0, "upper": 55.0},
    }[name]
    (targets,) = check_against_references(name, candles, [combo])
    fall, rise = targets[100:290], targets[400:590]
    if name == "rsi_reversion":  # reversion: long in the fall (RSI low), short in the rise
        fall, rise = -fall, -rise
    assert (fall == -1).mean() > 0.5 and not (fall == 1).any()
    assert (rise == 1).mean() > 0.5 and not (rise == -1).any()


@pytest.mark.parametrize(
    "pattern, fast, slow",
    [((0.1, 0.2), 2, 4), ((0.1, 0.2), 2, 6), ((0.1, 0.7, 0.3), 3, 9), ((0.3, 0.6, 0.1), 3, 9), ((1.1, 2.2, 3.3), 3, 6)],
)
def test_equal_smas_are_a_tie_on_the_short_side_too(pattern, fast, slow):
    """Windows that are multiples of a repeating pattern's period have exactly equal means: target
    0, neither side, where float means say fast < slow on some bars of some patterns."""
    close = np.array(pattern * 40)
    (targets,) = get("sma_cross").signals(candles_of(close), [{"fast": fast, "slow": slow}])
    assert targets.tolist() == [0] * len(close) == ref_sma_cross(candles_of(close), fast, slow)


def test_float_sums_would_decide_some_ties_short():
    """The exact short side matters: for one of the tie patterns above float means (and prefix
    sums) make fast < slow on some bars, which would be a short."""
    below = []
    for pattern, fast, slow in [((0.1, 0.2), 2, 4), ((0.1, 0.7, 0.3), 3, 9), ((0.3, 0.6, 0.1), 3, 9)]:
        close = np.array(pattern * 40)
        sums = np.cumsum(np.concatenate(([0.0], close)))
        below += [
            (sums[t + 1] - sums[t + 1 - fast]) / fast < (sums[t + 1] - sums[t + 1 - slow]) / slow
            for t in range(slow - 1, len(close))
        ]
    assert any(below)


@pytest.mark.parametrize("price", [0.1, 0.3, 1.1, 3.3, 99.99, 12345.678, 1e-5])
def test_a_flat_price_is_flat_except_rsi_reversion_short(price):
    """On a flat price every built-in but rsi_reversion is flat on both sides (a close equal to
    its SMA or EMA is a tie); rsi_reversion's RSI is 100 (no loss), above `upper`: short from
    bar `period` on, never long."""
    candles = candles_of([price] * 400)
    for name, spec in [
        ("sma_trend", {"window": "2:40:1"}),
        ("sma_cross", {"fast": "1:10:1", "slow": "11:40:3"}),
        ("ema_trend", {"span": "2:60:1"}),
        ("momentum", {"lookback": "1:40:1"}),
        ("donchian_breakout", {"entry": "1:10:3", "exit": "1:10:3"}),
    ]:
        grid = grid_of(name, spec)
        assert not grid.strategy.signals(candles, grid.combos).any(), name
    grid = grid_of("rsi_reversion", {"period": "2:20:3", "upper": "70,99.9"})
    targets = grid.strategy.signals(candles, grid.combos)
    for row, combo in zip(targets, grid.combos, strict=True):
        assert row.tolist() == [0] * combo["period"] + [-1] * (400 - combo["period"]), combo


def test_donchian_long_state_wins_when_both_are_set():
    """entry < exit: a close above the 2-bar high can come while the short state (set by a close
    below the 2-bar low, left only above the 6-bar high) still holds: the target is +1 there,
    and -1 again once the long state leaves while the short one holds."""
    close = [10, 10, 10, 10, 10, 10, 8, 7.5, 7.8, 8.2, 8.1, 6.0, 6.5]
    high = [c + 0.05 for c in close]
    low = [c - 0.05 for c in close]
    candles = candles_of(close, high, low)
    (targets,) = check_against_references("donchian_breakout", candles, [{"entry": 2, "exit": 6}])
    # Bar 6: 8 is below the 2-bar low (9.95): short. Bar 9: 8.2 is above the 2-bar high
    # max(7.55, 7.85): long, while the short state holds (8.2 is not above the 6-bar high 10.05).
    # Bar 11: 6.0 is below the 6-bar low 7.45: the long state leaves, the short one still holds.
    assert targets.tolist() == [0, 0, 0, 0, 0, 0, -1, -1, -1, 1, 1, -1, -1]
    assert donchian_states(candles, 2, 6)[9:11] == [(1, 1), (1, 1)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(candle_series(), st.integers(1, 20), st.integers(1, 20))
def test_donchian_states_overlap_only_when_entry_is_below_exit(candles, a, b):
    """With entry >= exit a close above the entry-bar high is above the exit-bar high (its bars
    are among them), and the same for the lows: the two states are never both 1."""
    entry, exit_ = max(a, b), min(a, b)
    assert (1, 1) not in donchian_states(candles, entry, exit_)
    check_against_references("donchian_breakout", candles, [{"entry": entry, "exit": exit_}])


# -- real candles: every pair in ../shared ------------------------------------------------------

REAL_COMBOS = {  # the defaults, and one more combination each (donchian: entry < exit, states overlap)
    "sma_trend": [{"window": 360}, {"window": 24}],
    "sma_cross": [{"fast": 24, "slow": 120}, {"fast": 6, "slow": 48}],
    "ema_trend": [{"span": 360}, {"span": 24}],
    "momentum": [{"lookback": 168}, {"lookback": 1}],
    "donchian_breakout": [{"entry": 120, "exit": 48}, {"entry": 24, "exit": 120}],
    "rsi_reversion": [{"period": 14, "lower": 30.0, "upper": 70.0}, {"period": 48, "lower": 40.0, "upper": 60.0}],
}


def real_files(shared_data: Path) -> list[Path]:
    files = sorted(shared_data.glob("binance_spot_*_1h_misrori.csv"))
    assert len(files) == 20
    return files[::5]  # 4 of the 20 pairs: the plain-loop references are slow


@pytest.mark.parametrize("name", BUILTINS)
def test_both_sides_on_the_real_candles_of_every_pair(shared_data, name):
    """The defaults and one more combination on 4 pairs' first 6,000 hourly candles,
    against the references of both sides and of the long side of before."""
    shorts = longs = 0
    for path in real_files(shared_data):
        candles = read_candle_file(resolve(str(path))).slice(0, 6000)  # 250 days of real hourly candles
        targets = check_against_references(name, candles, REAL_COMBOS[name])
        shorts, longs = shorts + int((targets == -1).sum()), longs + int((targets == 1).sum())
    assert shorts > 0.1 * longs > 0  # the short side does trade on real prices
