"""Command line: `python -m backtest run|refresh|check-strategy|list-strategies ...` (what the
container and the DAG call).

stdout carries one JSON object per pair; logs go to stderr. Bad input exits non-zero with one
line on stderr: 2 for invalid arguments, 3 for missing or bad data, 4 for a storage or network
I/O error (the one worth retrying), 5 when the strategy is at fault (it fails the look-ahead
check, raises, returns bad signals, writes to its candles, fails to import); see backtest/errors.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from functools import partial

from backtest.errors import EXIT_CHECK, EXIT_STDOUT_CLOSED, BacktestError, InputError, from_os_error
from backtest.params import parse_fee_bps, parse_time_ms, parse_whole, validate_symbol
from backtest.strategies.grid import Grid, make_grid, parse_assignments
from backtest.strategies.registry import DEFAULT_STRATEGY
from backtest.strategies.registry import get as get_strategy

log = logging.getLogger("backtest")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (the usage is in --help)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="backtest", description="Backtest and candle-refresh jobs for one trading pair.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="backtest one pair and print the result as JSON")
    run.add_argument("--symbol", required=True, help="pair, e.g. BTCUSDT (^[A-Z0-9]{2,20}$), or several: A,B,C")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-url", help="candle store: s3://bucket/prefix or a local folder")
    source.add_argument("--input", help="one Parquet or CSV candle file, local or s3://bucket/key")
    run.add_argument("--start", help="first bar's open time, ISO 8601 (UTC if no zone); default: first candle")
    run.add_argument("--end", help="end of the window, exclusive, ISO 8601; default: after the last candle")
    run.add_argument(
        "--strategy", default=DEFAULT_STRATEGY, help=f"strategy name (default {DEFAULT_STRATEGY}; see list-strategies)"
    )
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUES",
        help="a strategy parameter: one value, a list (5d,10d) or a range a:b:step (durations for bar counts); "
        "several --param make a grid (their cartesian product)",
    )
    run.add_argument(
        "--window", help="sma_trend's window, as --param window=...: bars (360) or 12h/15d/2w, a list or a range"
    )
    run.add_argument(
        "--holdout-days",
        type=partial(parse_whole, what="--holdout-days"),
        default=0,
        help="keep the last N days out of sample (default 0)",
    )
    run.add_argument(
        "--walk-forward",
        metavar="TRAIN:TEST[:anchored]",
        help="walk-forward analysis, e.g. 180d:30d: choose the grid's best on each TRAIN window, trade it on the "
        "TEST window after it, roll on; anchored: every training window starts at the first candle of the window",
    )
    run.add_argument(
        "--select-by",
        default="total_return",
        help="metric that picks a grid's best combination, also in each walk-forward fold (default total_return)",
    )
    run.add_argument("--fee-bps", default="10", help="fee per side in basis points (default 10)")
    trading = run.add_argument_group("execution (docs/execution.md; fractions as 0.05 or 5%)")
    trading.add_argument(
        "--direction",
        help="long (default: max(target, 0)), short (min(target, 0)) or long_short; short sides need a strategy "
        "that has one",
    )
    for flag, text in (
        ("--sl", "stop-loss below (long) or above (short) the entry bar's open, in (0, 1)"),
        ("--tp", "take-profit from the entry bar's open, > 0"),
        ("--trail", "trailing stop from the best price since entry, in (0, 1)"),
    ):
        trading.add_argument(flag, help=f"{text}: one value, a list or a range a:b:step (joins the grid)")
    trading.add_argument("--size", help="share of equity each trade uses, in (0, 1] (default 1)")
    trading.add_argument("--slippage-bps", help="adverse slippage per fill except take-profits, bps (default 0)")
    trading.add_argument("--borrow-bps-per-day", help="a short's borrow interest, bps per day (default 0)")
    run.add_argument("--results-url", help="also write {symbol}.json and {symbol}.equity.parquet here")

    check = commands.add_parser(
        "check-strategy",
        help="check, on given candles, that a strategy's signals are unchanged when later candles are removed "
        "and that its warm-up is enough (see docs/strategies.md for what a pass guarantees)",
    )
    check.add_argument("name", help="strategy name")
    check.add_argument("--param", action="append", default=[], metavar="KEY=VALUES", help="as for run (a grid: each)")
    check.add_argument("--input", help="candle file to check on (default: synthetic candles)")
    check.add_argument(
        "--cuts",
        default="60",
        metavar="N|all",
        help="truncation points sampled evenly (default 60; at least 1, at most every bar), besides every bar "
        "where the signal changes and the bar before it; all: every bar (exhaustive)",
    )

    commands.add_parser("list-strategies", help="every registered strategy and its parameters, as JSON")

    refresh = commands.add_parser("refresh", help="bring a pair's stored hourly candles up to --until")
    refresh.add_argument("--symbol", required=True, help="pair, e.g. BTCUSDT")
    refresh.add_argument("--data-url", required=True, help="candle store: s3://bucket/prefix or a local folder")
    refresh.add_argument("--until", required=True, help="store closed candles with open_time < until (ISO 8601)")
    refresh.add_argument(
        "--since", help="store candles from here on too, extending the stored history (default: --history-days back)"
    )
    refresh.add_argument(
        "--history-days",
        type=partial(parse_whole, what="--history-days"),
        default=730,
        help="history for a new pair (default 730; at most 36500, and not before 1970-01-01)",
    )
    refresh.add_argument("--source", choices=("binance", "synthetic"), default="binance")
    refresh.add_argument("--api-url", help="Binance API base URL (default: $BINANCE_API_URL or the public API)")
    return parser


def _run(args: argparse.Namespace) -> int:
    """Backtest each symbol; one failing pair does not stop the others (exit: the worst code)."""
    import os
    import time

    from backtest import job
    from backtest.simulation.execution import parse_execution
    from backtest.simulation.walkforward import parse_walk_forward

    began = time.time()
    symbols = [validate_symbol(s) for s in args.symbol.split(",")]
    if len(set(symbols)) != len(symbols):
        raise InputError(f"--symbol lists a pair twice: {args.symbol}")
    if args.holdout_days < 0:
        raise InputError(f"invalid --holdout-days {args.holdout_days}: must be 0 or more")
    if args.input and len(symbols) > 1:
        raise InputError("--input holds one pair's candles: give one --symbol")
    job_name = os.environ.get("BACKTEST_JOB_NAME")
    if job_name:
        job.check_job_name(job_name)  # before anything is written
    template = job.RunSpec(
        symbol=symbols[0],
        grid=_grid(args.strategy, args.param, args.window),
        fee_bps=parse_fee_bps(args.fee_bps),
        start_ms=parse_time_ms(args.start, "--start") if args.start is not None else None,
        end_ms=parse_time_ms(args.end, "--end") if args.end is not None else None,
        data_url=args.data_url,
        input_url=args.input,
        holdout_days=args.holdout_days,
        select_by=args.select_by,
        walk_forward=parse_walk_forward(args.walk_forward) if args.walk_forward is not None else None,
        execution=parse_execution(
            args.direction, args.sl, args.tp, args.trail, args.size, args.slippage_bps, args.borrow_bps_per_day
        ),
    )
    exit_code = 0
    failed: list[str] = []
    for symbol in symbols:
        spec = dataclasses.replace(template, symbol=symbol)
        try:
            result, equity = job.backtest(spec)
        except BacktestError as exc:  # a strategy at fault too (StrategyError); a bug of ours is not caught
            if len(symbols) == 1:
                raise
            log.error("%s failed: %s", symbol, exc)
            if args.results_url:  # the files first: they are the result, stdout is its log
                job.write_error(args.results_url, symbol, str(exc), exc.exit_code)
            _emit(job.to_json({"symbol": symbol, "error": str(exc), "exit_code": exc.exit_code}))
            exit_code = max(exit_code, exc.exit_code)
            failed.append(symbol)
            continue
        if args.results_url:
            job.write_result(args.results_url, result, equity)
        _emit(job.to_json(result))
    if args.results_url and job_name:
        job.write_job_record(
            args.results_url,
            {
                "job_name": job_name,
                "symbols": symbols,
                "failed": failed,
                "wall_seconds": round(time.time() - began, 3),
                "vcpu": float(os.environ.get("BACKTEST_JOB_VCPU", "0") or 0),
                "memory_mib": int(os.environ.get("BACKTEST_JOB_MEMORY_MIB", "0") or 0),
            },
        )
    return exit_code


def _grid(name: str, params: list[str], window: str | None) -> Grid:
    """The run's grid; `--window X` is `--strategy sma_trend --param window=X`."""
    spec = parse_assignments(params)
    if window is not None:
        if name != DEFAULT_STRATEGY or "window" in spec:
            raise InputError(f"--window is {DEFAULT_STRATEGY}'s window: give --param instead for {name}")
        spec["window"] = window
    return make_grid(get_strategy(name), spec)


def _check_strategy(args: argparse.Namespace) -> int:
    from backtest.strategies import lookahead

    cuts = lookahead.parse_cuts(args.cuts)
    grid = make_grid(get_strategy(args.name), parse_assignments(args.param))
    candles = lookahead.check_candles(args.input) if args.input else None
    report = lookahead.check_grid(grid, candles, cuts=cuts)
    _emit(json.dumps(report, allow_nan=False))
    if not report["ok"]:
        print(f"error: {report['problem']}", file=sys.stderr)
        return EXIT_CHECK
    return 0


def _list_strategies(args: argparse.Namespace) -> int:
    from backtest.strategies import registry

    _emit(json.dumps(registry.describe_all(), indent=1))
    return 0


def _refresh(args: argparse.Namespace) -> int:
    from backtest.data import refresh

    symbol = validate_symbol(args.symbol)
    until_ms = parse_time_ms(args.until, "--until")
    since_ms = parse_time_ms(args.since, "--since") if args.since is not None else None
    summary = refresh.refresh_pair(
        symbol,
        args.data_url,
        until_ms=until_ms,
        since_ms=since_ms,
        history_days=args.history_days,
        source=args.source,
        api_url=args.api_url,
        extend_history=since_ms is not None,  # asked for history: get it, also before the stored candles
    )
    _emit(refresh.summary_json(summary))
    return 0


def _refuse_empty(args: argparse.Namespace) -> None:
    """An option given as an empty string (`--walk-forward ""`) is a mistake, not the option left out."""
    for name, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            option = "the strategy name" if name == "name" else "--" + name.replace("_", "-")
            raise InputError(f"{option} is empty: give it a value or leave it out")


def keep_freed_memory(pad_bytes: int = 256 << 20) -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the kernel.

    Why: the engine's (k, n) temporaries are megabytes each; by default glibc gives each one back
    when it is freed and the next one faults its pages in again, which on a microVM (Firecracker:
    AWS Fargate, and this machine) costs more than the arithmetic itself: 3 to 5x on a chain
    like `a * (1 - s * sl)` here. Peak memory is what it was (the same arrays at once); only the
    kernel round trips go. Linux with glibc only; elsewhere, or if it fails, nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # glibc's <malloc.h>
        return bool(
            libc.mallopt(m_mmap_threshold, 1 << 30)  # at most 1 GiB: an array's memory is reused, not mapped anew
            and libc.mallopt(m_trim_threshold, pad_bytes * 4)
            and libc.mallopt(m_top_pad, pad_bytes)
        )
    except (OSError, AttributeError):  # not glibc (musl, another libc)
        return False


class StdoutClosed(Exception):
    """stdout's reader has gone (a broken pipe on stdout only: one elsewhere is an I/O error)."""


def _emit(text: str) -> None:
    """One piece of the command's output on stdout, flushed now (a job's log gets each result as it
    is done, and no output is left for Python's flush at exit, where a broken pipe is no longer ours
    to report)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise StdoutClosed from None


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
        _refuse_empty(args)
        if args.verbose:
            logging.getLogger().setLevel(logging.DEBUG)
        commands = {
            "run": _run,
            "refresh": _refresh,
            "check-strategy": _check_strategy,
            "list-strategies": _list_strategies,
        }
        return commands[args.command](args)
    except BacktestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except StdoutClosed:
        # The reader of stdout left (`list-strategies | head`): nothing went wrong here. No message,
        # the exit of a process stopped by SIGPIPE, and stdout on /dev/null so that Python's flush
        # at exit does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_STDOUT_CLOSED
    except OSError as exc:
        error = from_os_error(exc)
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
