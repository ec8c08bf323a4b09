"""The engine against hand-computed cases and against a plain-loop reference (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.job import Segment
from backtest.simulation.engine import classic_equity, desired_positions, simulate
from backtest.simulation.metrics import compute_metrics_block
from backtest.strategies.exact import above_sma
from backtest.strategy import get
from tests.support import make_candles, reference_backtest

# A six-bar series worked by hand with window 2 (see test_hand_computed_trade):
#   SMA_t = (c_{t-1} + c_t) / 2 -> signal = [0, 1, 1, 0, 0, 1]; positions p = [0, 0, 1, 1, 0, 0]
OPENS = [10.0, 10.5, 11.5, 12.0, 10.5, 11.0]
CLOSES = [10.0, 11.0, 12.0, 11.0, 10.0, 12.0]
FEE = 0.001


@dataclass(frozen=True)
class Run:
    position: np.ndarray  # bool per in-window bar
    equity: np.ndarray  # float64 per in-window bar, E_0 = 1


def run_windows(opens, closes, first_bar: int, windows: list[int], fee: float) -> list[Run]:
    """sma_trend for each window over bars [first_bar, end), as a run computes it: the built-in's
    signals of all windows at once, then the engine's positions and equity (`job.Segment`); the
    bars before first_bar are warm-up only."""
    candles = make_candles(opens, closes)
    signals = get("sma_trend").signals(candles, [{"window": w} for w in windows])
    sim = Segment.of(candles, first_bar, len(candles)).run(signals, fee)
    return [Run(p, e) for p, e in zip(sim.position, sim.equity, strict=True)]


def metrics_of(equity, position, opens, closes, fee: float, gaps: int) -> dict:
    """All metrics of one backtest: compute_metrics_block on a block of one, with the trades of the
    long/flat `position` (held over each bar) as the engine counts them."""
    high, low = np.maximum(opens, closes), np.minimum(opens, closes)
    sim = simulate(opens, high, low, closes, np.asarray(position).astype(np.int8)[np.newaxis], fee)
    return compute_metrics_block(equity[np.newaxis], sim.position, closes, gaps, sim.counts())[0]


def test_signal_is_close_strictly_above_sma():
    assert above_sma(np.array(CLOSES), 2).tolist() == [False, True, True, False, False, True]
    # Equal to the SMA is not above it: a flat series never signals.
    assert not above_sma(np.full(50, 0.1), 10).any()


def test_hand_computed_trade():
    (run,) = run_windows(np.array(OPENS), np.array(CLOSES), 0, [2], FEE)
    assert run.position.astype(int).tolist() == [0, 0, 1, 1, 0, 0]
    keep = 1 - FEE
    expected = [
        1.0,
        1.0,  # flat: signal at bar 1 fills at bar 2's open
        keep * 12 / 11.5,  # entry at o_2 = 11.5, marked at c_2 = 12
        keep * 12 / 11.5 * 11 / 12,  # held
        keep * 12 / 11.5 * 11 / 12 * (10.5 / 11) * keep,  # exit at o_4 = 10.5
        keep * 12 / 11.5 * 11 / 12 * (10.5 / 11) * keep,  # flat; the bar-5 signal has no next bar to fill
    ]
    np.testing.assert_allclose(run.equity, expected, rtol=1e-15)

    m = metrics_of(run.equity, run.position, np.array(OPENS), np.array(CLOSES), FEE, gaps=0)
    assert m["total_return"] == pytest.approx(keep**2 * 10.5 / 11.5 - 1, rel=1e-14)
    assert m["buy_hold_return"] == pytest.approx(0.2, rel=1e-14)
    assert m["trades"] == 1
    assert m["win_rate"] == 0.0  # (10.5 / 11.5) * 0.999^2 - 1 < 0
    assert m["exposure"] == pytest.approx(2 / 6)
    assert m["bars"] == 6


def test_fees_are_charged_on_entry_and_exit():
    (no_fee,) = run_windows(np.array(OPENS), np.array(CLOSES), 0, [2], 0.0)
    (with_fee,) = run_windows(np.array(OPENS), np.array(CLOSES), 0, [2], 0.01)
    assert with_fee.equity[-1] == pytest.approx(no_fee.equity[-1] * 0.99**2, rel=1e-14)


def test_warmup_bars_feed_the_sma_but_not_the_equity():
    # Start at bar 2: the bar-1 close is warm-up, so the SMA at the first in-window bar exists.
    (run,) = run_windows(np.array(OPENS), np.array(CLOSES), 2, [2], FEE)
    assert run.position.astype(int).tolist() == [0, 1, 0, 0]  # p_0 = 0 even though signal_1 = 1
    keep = 1 - FEE
    np.testing.assert_allclose(run.equity, [1.0, keep * 11 / 12, keep**2 * 10.5 / 12, keep**2 * 10.5 / 12])
    # Without the warm-up bar the SMA is undefined at bar 2, so the first entry is missed.
    (cold,) = run_windows(np.array(OPENS[2:]), np.array(CLOSES[2:]), 0, [2], FEE)
    assert cold.position.astype(int).tolist() == [0, 0, 0, 0]


def test_undefined_metrics_are_none():
    falling = np.linspace(100, 50, 40)
    (run,) = run_windows(falling, falling, 0, [5], FEE)
    m = metrics_of(run.equity, run.position, falling, falling, FEE, gaps=3)
    assert m["trades"] == 0 and m["exposure"] == 0.0
    assert m["total_return"] == 0.0 and m["cagr"] == 0.0
    assert m["volatility"] == 0.0
    assert m["sharpe"] is None and m["sortino"] is None and m["win_rate"] is None and m["calmar"] is None
    assert m["max_drawdown"] == 0.0
    assert m["gaps"] == 3


def test_metric_formulas_on_a_known_curve():
    equity = np.array([1.0, 1.1, 0.99, 1.089, 1.2])
    position = np.array([False, True, True, True, True])
    prices = np.array([1.0, 1.0, 1.0, 1.0, 2.0])
    m = metrics_of(equity, position, prices, prices, 0.0, gaps=0)
    r = equity[1:] / equity[:-1] - 1
    assert m["max_drawdown"] == pytest.approx(1 - 0.99 / 1.1)
    assert m["volatility"] == pytest.approx(np.std(r, ddof=1) * np.sqrt(8760))
    assert m["sharpe"] == pytest.approx(r.mean() / np.std(r, ddof=1) * np.sqrt(8760))
    assert m["sortino"] == pytest.approx(r.mean() * 8760 / (np.sqrt(np.mean(np.minimum(r, 0) ** 2)) * np.sqrt(8760)))
    assert m["cagr"] == pytest.approx(1.2 ** (8760 / 5) - 1)
    assert m["calmar"] == pytest.approx(m["cagr"] / m["max_drawdown"])
    assert m["win_rate"] is None  # still open at the end: no closed round trip


def test_win_rate_counts_closed_round_trips():
    position = np.array([0, 1, 1, 0, 1, 0, 1], dtype=bool)
    opens = np.array([1.0, 10.0, 11.0, 12.0, 10.0, 9.0, 9.5])
    equity = np.ones(7)
    m = metrics_of(equity, position, opens, opens, 0.0, gaps=0)
    # Trips: 10 -> 12 (win), 10 -> 9 (loss); the third is still open.
    assert m["trades"] == 3 and m["win_rate"] == 0.5


def test_many_windows_in_one_pass_match_single_runs():
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 3000)))
    opens = np.concatenate(([100.0], close[:-1]))
    windows = [24, 100, 360]
    together = run_windows(opens, close, 400, windows, FEE)
    for w, run in zip(windows, together, strict=True):
        (alone,) = run_windows(opens, close, 400, [w], FEE)
        np.testing.assert_array_equal(run.equity, alone.equity)


# -- properties against the plain-loop reference ----------------------------------------------

# Returns drawn partly from a small set (including 0) so that exact ties with the SMA occur.
_step = st.one_of(st.sampled_from([0.0, 0.01, -0.01]), st.floats(-0.05, 0.05, allow_nan=False))


@st.composite
def series(draw):
    n = draw(st.integers(2, 90))
    steps = draw(st.lists(_step, min_size=n, max_size=n))
    gaps = draw(st.lists(st.floats(-0.01, 0.01), min_size=n, max_size=n))
    close = np.round(50 * np.cumprod(1 + np.array(steps)), 6)
    prev = np.concatenate(([close[0]], close[:-1]))
    opens = np.round(prev * (1 + np.array(gaps)), 6)
    window = draw(st.integers(2, 20))
    first_bar = draw(st.integers(0, n - 1))
    return opens, close, window, first_bar


@settings(max_examples=150, deadline=None)
@given(series())
def test_matches_plain_loop_reference_without_fees(data):
    opens, close, window, first_bar = data
    (run,) = run_windows(opens, close, first_bar, [window], 0.0)
    positions, equity = reference_backtest(list(opens), list(close), window, first_bar, 0.0)
    assert run.position.astype(int).tolist() == positions
    np.testing.assert_allclose(run.equity, equity, rtol=1e-12)
    # With f = 0 equity is the product of 1 + (the return of each bar's held stretch).
    o, c = opens[first_bar:], close[first_bar:]
    product = 1.0
    for t in range(1, len(c)):
        if positions[t - 1] or positions[t]:
            start = c[t - 1] if positions[t - 1] else o[t]
            stop = c[t] if positions[t] else o[t]
            product *= 1 + (stop / start - 1)
    assert run.equity[-1] == pytest.approx(product, rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(series(), st.floats(0.0, 0.01))
def test_matches_plain_loop_reference_with_fees(data, fee):
    opens, close, window, first_bar = data
    (run,) = run_windows(opens, close, first_bar, [window], fee)
    _, equity = reference_backtest(list(opens), list(close), window, first_bar, fee)
    np.testing.assert_allclose(run.equity, equity, rtol=1e-12)


@settings(max_examples=100, deadline=None)
@given(series(), st.data())
def test_no_look_ahead(data, extra):
    opens, close, window, first_bar = data
    n = len(close)
    t = extra.draw(st.integers(first_bar, n - 1))
    changed = close.copy()
    changed[t + 1 :] = changed[t + 1 :] * extra.draw(st.floats(0.5, 2.0))
    (a,) = run_windows(opens, close, first_bar, [window], 0.001)
    (b,) = run_windows(opens, changed, first_bar, [window], 0.001)
    k = t - first_bar
    assert a.position[: k + 1].tolist() == b.position[: k + 1].tolist()
    # p_{t+1} = signal_t is decided at bar t's close, so it cannot change either.
    assert a.position[: k + 2].tolist() == b.position[: k + 2].tolist()


@settings(max_examples=100, deadline=None)
@given(series(), st.floats(0.0, 0.02), st.floats(0.0, 0.02))
def test_raising_the_fee_never_raises_the_return(data, fee_a, fee_b):
    opens, close, window, first_bar = data
    low, high = sorted((fee_a, fee_b))
    (cheap,) = run_windows(opens, close, first_bar, [window], low)
    (dear,) = run_windows(opens, close, first_bar, [window], high)
    assert dear.equity[-1] <= cheap.equity[-1]


def test_exact_signal_survives_large_offsets():
    # Prices of ~1e6 with tiny variation: naive rolling sums would misjudge ties.
    close = np.array([1_000_000.1] * 400 + [1_000_000.1 + 1e-9] * 5)
    signal = above_sma(close, 360)
    assert not signal[:400].any()
    assert signal[400:].all()


def test_desired_positions_shift_by_one_bar():
    signal = np.array([1, 0, 1, 1], dtype=np.int8)
    assert desired_positions(signal, 0, 4).tolist() == [[0, 1, 0, 1]]
    assert desired_positions(signal, 1, 3).tolist() == [[0, 0, 1]]
    # Several rows at once: each shifted on its own.
    rows = np.array([[1, 0, 1, 1], [0, 1, 1, 0]], dtype=np.int8)
    assert desired_positions(rows, 1, 3).tolist() == [[0, 0, 1], [0, 1, 1]]


def test_desired_positions_keep_the_direction_s_sides():
    targets = np.array([1, -1, 0, -1, 1], dtype=np.int8)
    assert desired_positions(targets, 0, 5, "long").tolist() == [[0, 1, 0, 0, 0]]
    assert desired_positions(targets, 0, 5, "short").tolist() == [[0, 0, -1, 0, -1]]
    assert desired_positions(targets, 0, 5, "long_short").tolist() == [[0, 1, -1, 0, -1]]


def test_classic_equity_accepts_one_bar():
    assert classic_equity(np.array([1.0]), np.array([1.0]), np.array([False]), 0.001).tolist() == [[1.0]]
