"""The SMA backtests written with vectorbt: the reference the benchmarks time and check.

Runs in its own virtualenv (`.venv-vectorbt/`, made by `benchmarks/bench_engine.py`), never in
the project's: vectorbt pulls in numba, scipy, plotly and more.

    .venv-vectorbt/bin/python benchmarks/vectorbt_reference.py --input candles.csv --window 360 --fee-bps 10
    .venv-vectorbt/bin/python benchmarks/vectorbt_reference.py --input candles.csv --fast 24:240:24 \
        --slow 120:1440:24 --fee-bps 10 [--signals-out signals.npy]
    .venv-vectorbt/bin/python benchmarks/vectorbt_reference.py --input candles.csv --fast 24:240:24 \
        --slow 120:1440:24 --long-short --sl 0.03,0.06,0.1 --fee-bps 10 [--check-out check.npz]

Prints one JSON object on stdout: with --window (`sma_trend`, used by bench_engine.py) the total
return and entries; with --fast/--slow (`sma_cross` over every fast < slow, used by
bench_strategies.py) the combinations, each one's total return and entries, in one
`MA.run` + `Portfolio.from_signals` over a frame with one column per combination.
--signals-out also saves the (combinations, bars) signals, bit-packed (np.packbits along the
bars), for a bar-by-bar comparison; the timed runs leave it out. With --long-short (and --sl,
used by bench_execution.py) the grid is traded long and short, once per stop-loss level: see
`execution_grid` below.

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


def sma_cross_targets(close: pd.Series, combos: list[tuple[int, int]]) -> np.ndarray:
    """(bars, combinations) int8: +1 while SMA(fast) > SMA(slow), -1 while below, else 0 (a tie,
    or an SMA still undefined: NaN compares False both ways)."""
    fast_ma = vbt.MA.run(close, [f for f, _ in combos], short_name="fast")
    slow_ma = vbt.MA.run(close, [s for _, s in combos], short_name="slow")
    above = fast_ma.ma_above(slow_ma).to_numpy()
    below = fast_ma.ma_below(slow_ma).to_numpy()
    return above.astype(np.int8) - below.astype(np.int8)


def order_signals(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(entries, short_entries, exits), each (bars, columns) bool, from targets (bars, columns).

    The position wanted over bar t is d_t = target_{t-1} (d_0 = 0), filled at bar t's open
    (`price=open`), so each signal sits on the bar where d changes: an entry where d becomes +1,
    a short entry where it becomes -1 (from +1: a reversal, `upon_opposite_entry='reverse'`), an
    exit (long or short) where it becomes 0. Only the first bar of each run carries a signal, so
    after a stop-loss the position stays flat until d changes, as in our engine."""
    d = np.zeros_like(targets)
    d[1:] = targets[:-1]
    changed = np.empty(d.shape, dtype=bool)
    changed[0] = d[0] != 0
    np.not_equal(d[1:], d[:-1], out=changed[1:])
    return changed & (d == 1), changed & (d == -1), changed & (d == 0)


def long_short(
    candles: pd.DataFrame, targets: np.ndarray, fee: float, sl: np.ndarray | None, columns: pd.Index
) -> vbt.Portfolio:
    """`targets` (bars, columns) traded long and short at the next open, with a stop-loss of
    sl[j] in column j (None: no stop)."""
    entries, short_entries, exits = (
        pd.DataFrame(a, index=candles.index, columns=columns) for a in order_signals(targets)
    )
    stops = {} if sl is None else {"sl_stop": sl[np.newaxis, :], "stop_entry_price": "price"}
    return vbt.Portfolio.from_signals(
        close=candles["close"],
        entries=entries,
        exits=exits,
        short_entries=short_entries,
        short_exits=exits,
        upon_opposite_entry="reverse",
        price=candles["open"],
        open=candles["open"],
        high=candles["high"],
        low=candles["low"],
        fees=fee,
        init_cash=1.0,
        freq="1h",
        **stops,
    )


def position_counts(portfolio: vbt.Portfolio, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """(long, short) positions entered per column (the last one may still be open)."""
    records = portfolio.positions.values
    long_ = records["direction"] == 0
    return (
        np.bincount(records["col"][long_], minlength=columns),
        np.bincount(records["col"][~long_], minlength=columns),
    )


TRADE_FIELDS = ("col", "entry_idx", "exit_idx", "entry_price", "exit_price", "direction", "status")


def execution_grid(
    candles: pd.DataFrame, fast: list[int], slow: list[int], sl: list[float], fee: float, check_out: Path | None
) -> dict:
    """sma_cross over every fast < slow, long and short, each combination once per stop-loss
    level (the level fastest, as our grid orders them): one `Portfolio.from_signals` over
    combinations x levels columns, `sl_stop` per column, open/high/low given for the stops.

    Stops: vectorbt measures sl_stop from `stop_entry_price`; "price" (the order price: the entry
    bar's open, as our R) rather than its default, the entry bar's close. It checks a stop from
    the bar after the entry, before that bar's signals, and fills at the stop price or at the
    open when the open is already past it (StopLimit, its default).

    --check-out also saves, for the cross-check: the targets (combinations, bars), the entries,
    short entries and exits of every column bit-packed along the bars, and the positions of
    this portfolio and of the same grid without stops (one column per combination)."""
    combos = [(f, s) for f in fast for s in slow if f < s]
    targets = sma_cross_targets(candles["close"], combos)
    levels = np.asarray(sl, dtype=np.float64)
    columns = pd.MultiIndex.from_tuples(
        [(f, s, x) for f, s in combos for x in levels], names=["fast", "slow", "sl_stop"]
    )
    expanded = np.repeat(targets, len(levels), axis=1)
    portfolio = long_short(candles, expanded, fee, np.tile(levels, len(combos)), columns)
    long_, short_ = position_counts(portfolio, len(columns))
    if check_out is not None:
        plain = long_short(candles, targets, fee, None, pd.MultiIndex.from_tuples(combos, names=["fast", "slow"]))
        packed = {
            name: np.packbits(a.T, axis=1)
            for name, a in zip(("entries", "short_entries", "exits"), order_signals(expanded), strict=True)
        }
        stop_trades, plain_trades = portfolio.positions.values, plain.positions.values
        np.savez(
            check_out,
            targets=targets.T,
            **packed,
            **{f"stop_{name}": stop_trades[name] for name in TRADE_FIELDS},
            **{f"plain_{name}": plain_trades[name] for name in TRADE_FIELDS},
            plain_total_return=plain.total_return().to_numpy(),
        )
    return {
        "combinations": [[f, s, float(x)] for f, s, x in columns],
        "skipped": (len(fast) * len(slow) - len(combos)) * len(levels),
        "total_return": [float(x) for x in portfolio.total_return().to_numpy()],
        "long_trades": [int(x) for x in long_],
        "short_trades": [int(x) for x in short_],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, type=Path, help="candle CSV (date/open_time, open, close, ...)")
    parser.add_argument("--window", type=int, default=360, help="sma_trend: SMA window in bars (default 360)")
    parser.add_argument("--fast", help="sma_cross grid: fast windows in bars, a:b:step or one number")
    parser.add_argument("--slow", help="sma_cross grid: slow windows in bars, a:b:step or one number")
    parser.add_argument("--signals-out", type=Path, help="grid: save the bit-packed signals here (.npy)")
    parser.add_argument("--long-short", action="store_true", help="grid: trade long and short (with --sl)")
    parser.add_argument("--sl", help="with --long-short: stop-loss levels, fractions, comma-separated")
    parser.add_argument("--check-out", type=Path, help="with --long-short: save signals and positions here (.npz)")
    parser.add_argument("--fee-bps", type=float, default=10.0, help="fee per side in basis points (default 10)")
    args = parser.parse_args()
    if (args.fast is None) != (args.slow is None):
        parser.error("--fast and --slow go together")
    if (args.long_short or args.sl or args.check_out) and not (args.long_short and args.fast and args.sl):
        parser.error("--long-short needs --fast, --slow and --sl; --sl and --check-out need --long-short")

    candles = read_candles(args.input)
    fee = args.fee_bps / 10_000
    if args.long_short:
        levels = [float(x) for x in args.sl.split(",")]
        outcome = execution_grid(candles, bar_range(args.fast), bar_range(args.slow), levels, fee, args.check_out)
    elif args.fast is not None:
        outcome = grid(candles, bar_range(args.fast), bar_range(args.slow), fee, args.signals_out)
    else:
        outcome = single(candles, args.window, fee)
    result = {"engine": "vectorbt", "vectorbt_version": vbt.__version__, "bars": len(candles), "fee": fee, **outcome}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
