"""What a run holds at its as-of moment (`backtest.simulation.position`): every built-in on real
candles, long/flat and long/short with stops, checked against the run whose window ends one bar
later (what it then held over that bar) and against the equity file's `position` column."""

from __future__ import annotations

import numpy as np
import pytest

from backtest.data.candles import read_candle_file
from backtest.data.storage import resolve
from backtest.job import RunSpec, backtest
from backtest.params import HOUR_MS, format_time_ms, parse_time_ms
from backtest.simulation.execution import parse_execution
from backtest.strategies.builtins import BUILTINS
from backtest.strategies.grid import grid_of

SIDES = {"long": 1, "flat": 0, "short": -1}
START = parse_time_ms("2023-03-01")
ENDS = [parse_time_ms("2023-05-01") + i * 37 * HOUR_MS for i in range(12)]  # a dozen as-of moments
EXECUTIONS = {
    "long": {},
    "long_short_stops": {"direction": "long_short", "sl": "2%", "trail": "4%", "slippage_bps": "5", "borrow_bps_per_day": "20"},
}  # fmt: skip


def run(csv: str, name: str, end: int, execution: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    spec = RunSpec("BTCUSDT", grid_of(name), 10.0, START, end, input_url=csv, execution=parse_execution(**execution))
    result, curves = backtest(spec)
    times = curves.equity.column("open_time").cast("int64").to_numpy()
    return result, curves.equity.column("position").to_numpy(), times


@pytest.mark.parametrize("how", EXECUTIONS)
@pytest.mark.parametrize("name", [cls.name for cls in BUILTINS])
def test_position_now_is_what_the_next_bar_holds(shared_data, name, how):
    csv = str(shared_data / "binance_spot_BTCUSDT_1h_misrori.csv")
    candles = read_candle_file(resolve(csv))
    seen, marked = set(), 0
    for end in ENDS:
        result, position, times = run(csv, name, end, EXECUTIONS[how])
        _, later_position, _ = run(csv, name, end + HOUR_MS, EXECUTIONS[how])
        side = SIDES[result["position_now"]]
        seen.add(result["position_now"])
        assert later_position[-1] == side, (name, format_time_ms(end))  # what it held over the next bar
        assert np.array_equal(later_position[:-1], position)  # the same history
        # since: the first bar of the trailing stretch of that side, or the next bar when it starts there
        if position[-1] != side:
            assert result["position_since"] == format_time_ms(end)
        else:
            other = np.flatnonzero(position != side)
            first = int(times[int(other[-1]) + 1 if len(other) else 0])
            assert result["position_since"] == format_time_ms(first), (name, format_time_ms(end))
        if result["position_entry_price"] is None:
            assert result["position_return"] is None
            continue
        # an open trade going on: entered at the open of the `since` bar; its mark at the last close
        assert side != 0 and position[-1] == side
        marked += 1
        at = int(np.searchsorted(candles.open_time, parse_time_ms(result["position_since"])))
        slip = 5 / 10_000 if how != "long" else 0.0
        price = candles.open[at] * (1 + slip if side > 0 else 1 - slip)
        price = min(max(price, candles.low[at]), candles.high[at])
        assert result["position_entry_price"] == pytest.approx(price, rel=1e-12)
        close = candles.close[np.searchsorted(candles.open_time, end) - 1]
        if side > 0:
            expected = (1 - 0.001) * close / price - 1
        else:
            hours = (end - parse_time_ms(result["position_since"])) // HOUR_MS
            expected = (1 - 0.001) - (1 + 20 / 10_000 / 24) ** hours * close / price
        assert result["position_return"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert len(seen) >= 2 and marked, (name, how, seen, marked)  # not all one side; some open trades marked
