"""The same SMA trend backtest written with vectorbt: the reference `bench_engine.py` times and checks.

Runs in its own virtualenv (`.venv-vectorbt/`, made by `benchmarks/bench_engine.py`), never in
the project's: vectorbt pulls in numba, scipy, plotly and more.

    .venv-vectorbt/bin/python benchmarks/vectorbt_reference.py --input candles.csv --window 360 --fee-bps 10

Prints one JSON object (total return, entries, vectorbt version) on stdout.

How it matches `backtest.engine`, and where it cannot:

- Signal: close > SMA(window) of the closes, False while the SMA is undefined (pandas rolling
  mean; our engine decides ties exactly, pandas' rolling sum may differ by rounding only on an
  exact tie, which real prices do not hit).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, type=Path, help="candle CSV (date/open_time, open, close, ...)")
    parser.add_argument("--window", type=int, default=360, help="SMA window in bars (default 360)")
    parser.add_argument("--fee-bps", type=float, default=10.0, help="fee per side in basis points (default 10)")
    args = parser.parse_args()

    candles = read_candles(args.input)
    close, open_ = candles["close"], candles["open"]
    signal = close > close.rolling(args.window).mean()  # NaN SMA compares False
    entries = signal.shift(1, fill_value=False).astype(bool)
    exits = (~signal).shift(1, fill_value=False).astype(bool)
    fee = args.fee_bps / 10_000
    portfolio = vbt.Portfolio.from_signals(
        close=close, entries=entries, exits=exits, price=open_, fees=fee, init_cash=1.0, freq="1h"
    )
    sides = portfolio.orders.values["side"]
    result = {
        "engine": "vectorbt",
        "vectorbt_version": vbt.__version__,
        "bars": len(candles),
        "window_bars": args.window,
        "fee": fee,
        "total_return": float(portfolio.total_return()),
        "entries": int(np.sum(sides == 0)),
        "exits": int(np.sum(sides == 1)),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
