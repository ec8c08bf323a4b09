"""The SMA backtests written with vectorbt: the reference the benchmarks time and check.

Runs in its own virtualenv (`.venv-vectorbt/`, made by `benchmarks/bench_engine.py`), never in
the project's: vectorbt pulls in numba, scipy, plotly and more.

    .venv-vectorbt/bin/python benchmarks/vectorbt_reference.py --input candles.csv --window 360 --fee-bps 10
    .venv-vectorbt/bin/python benchmarks/vectorbt_reference.py --input candles.csv --fast 24:240:24 \
        --slow 120:1440:24 --fee-bps 10 [--signals-out signals.npy]

Prints one JSON object on stdout: with --window (`sma_trend`, used by bench_engine.py) the total
return and entries; with --fast/--slow (`sma_cross` over every fast < slow, used by
bench_strategies.py) the combinations, each one's total return and entries, in one
`MA.run` + `Portfolio.from_signals` over a frame with one column per combination.
--signals-out also saves the (combinations, bars) signals, bit-packed (np.packbits along the
bars), for a bar-by-bar comparison; the timed runs leave it out.

How it matches `backtest.simulation.engine`, and where it cannot:

- Signals: close > SMA(window), or SMA(fast) > SMA(slow), False while an SMA is undefined
  (pandas / vectorbt rolling means; our engine decides ties exactly, the rolling sums here may
  differ by rounding only on an exact tie or a near-tie within a few ulps).
- Execution at the next bar's open: vectorbt fills an order at `price` of the bar where the signal
  is, so the signals are shifted by one bar and `price=open`. The position over bar t is then
  signal_{t-1} filled at open_t and marked at close_t, exactly our p_t and E_t.
- Fees: vectorbt adds the fee on top of a buy (all cash C buys C / (price * (1+f)) units), while
  our engine keeps (1-f) of the cash invested. Sells are the same (proceeds * (1-f)). So each
  entry differs by the factor (1-f)(1+f) = 1 - f^2, and after n entries
  our final equity = vectorbt's * (1 - f^2)^n. vectorbt has no option for the (1-f) convention.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import vectorbt as vbt


def read_candles(path: Path) -> pd.DataFrame:
    """Candles with open, close; the time index from `open_time` or `date` (CSV or Parquet)."""
    # Parquet needs pyarrow, which vectorbt does not install: the benchmark passes the CSV.
    frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    time_column = "open_time" if "open_time" in frame.columns else "date"
    frame.index = pd.to_datetime(frame.pop(time_column), utc=True)
    return frame


def bar_range(text: str) -> list[int]:
    """`a:b:step` (ends included) or a single number, in bars."""
    parts = [int(x) for x in text.split(":")]
    return list(range(parts[0], parts[1] + 1, parts[2])) if len(parts) == 3 else parts


def backtest(candles: pd.DataFrame, signal: pd.DataFrame | pd.Series, fee: float) -> vbt.Portfolio:
    """Long while signal_{t-1}, filled at open_t (the shift by one bar), fee per side."""
    entries = signal.shift(1, fill_value=False).astype(bool)
    exits = (~signal).shift(1, fill_value=False).astype(bool)
    return vbt.Portfolio.from_signals(
        close=candles["close"], entries=entries, exits=exits, price=candles["open"], fees=fee, init_cash=1.0, freq="1h"
    )


def entry_counts(portfolio: vbt.Portfolio, columns: int) -> np.ndarray:
    orders = portfolio.orders.values
    return np.bincount(orders["col"][orders["side"] == 0], minlength=columns)


def single(candles: pd.DataFrame, window: int, fee: float) -> dict:
    close = candles["close"]
    portfolio = backtest(candles, close > close.rolling(window).mean(), fee)  # NaN SMA compares False
    sides = portfolio.orders.values["side"]
    return {
        "window_bars": window,
        "total_return": float(portfolio.total_return()),
        "entries": int(np.sum(sides == 0)),
        "exits": int(np.sum(sides == 1)),
    }


def grid(candles: pd.DataFrame, fast: list[int], slow: list[int], fee: float, signals_out: Path | None) -> dict:
    combos = [(f, s) for f in fast for s in slow if f < s]  # sma_cross rejects fast >= slow
    close = candles["close"]
    # One column per combination; MA.run computes each distinct window once.
    fast_ma = vbt.MA.run(close, [f for f, _ in combos], short_name="fast")
    slow_ma = vbt.MA.run(close, [s for _, s in combos], short_name="slow")
    signal = fast_ma.ma_above(slow_ma)  # NaN compares False
    portfolio = backtest(candles, signal, fee)
    if signals_out is not None:
        np.save(signals_out, np.packbits(signal.to_numpy().T, axis=1))
    return {
        "combinations": [list(c) for c in combos],
        "skipped": len(fast) * len(slow) - len(combos),
        "total_return": [float(x) for x in portfolio.total_return().to_numpy()],
        "entries": [int(x) for x in entry_counts(portfolio, len(combos))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, type=Path, help="candle CSV (date/open_time, open, close, ...)")
    parser.add_argument("--window", type=int, default=360, help="sma_trend: SMA window in bars (default 360)")
    parser.add_argument("--fast", help="sma_cross grid: fast windows in bars, a:b:step or one number")
    parser.add_argument("--slow", help="sma_cross grid: slow windows in bars, a:b:step or one number")
    parser.add_argument("--signals-out", type=Path, help="grid: save the bit-packed signals here (.npy)")
    parser.add_argument("--fee-bps", type=float, default=10.0, help="fee per side in basis points (default 10)")
    args = parser.parse_args()
    if (args.fast is None) != (args.slow is None):
        parser.error("--fast and --slow go together")

    candles = read_candles(args.input)
    fee = args.fee_bps / 10_000
    if args.fast is not None:
        outcome = grid(candles, bar_range(args.fast), bar_range(args.slow), fee, args.signals_out)
    else:
        outcome = single(candles, args.window, fee)
    result = {"engine": "vectorbt", "vectorbt_version": vbt.__version__, "bars": len(candles), "fee": fee, **outcome}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
