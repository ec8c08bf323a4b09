"""A user's strategy can never make a result silently wrong, and its failure stays its own.

Every way a strategy can misbehave — write to its candles, return anything but bool signals of
the right shape, raise or exit in its code or at import, declare a bad warm-up — is exit 5 (the
strategy is at fault) with one line on stderr naming the strategy, its file and what it did, no
traceback and no result; its `print()` goes to stderr; in a chunk of pairs only its pair fails.
Real `python -m backtest` processes, on synthetic candles in tmp, with the strategy modules in a
folder on BACKTEST_STRATEGY_PATH (the `strategy_folder` fixture).
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from backtest import errors
from backtest.cli import main
from backtest.data.store import CandleStore
from backtest.data.synthetic import EPOCH_MS, synthetic_candles
from backtest.params import DAY_MS
from backtest.simulation.engine import Segment
from backtest.strategy import get
from tests.support import STORE_SINCE, backtest_process
from tests.support.strategies import drop

EXIT_STRATEGY = 5  # the strategy is at fault (backtest/errors.py)
DAYS = 40
BARS = DAYS * 24  # the candles a run of the whole file reads


@pytest.fixture(scope="module")
def candle_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("candles") / "ETHUSDT.parquet"
    pq.write_table(synthetic_candles("ETHUSDT", EPOCH_MS, EPOCH_MS + DAYS * DAY_MS).to_table(), path)
    return path


def function_strategy(body: str, warmup: str = "0", name: str = "faulty") -> str:
    """A function strategy module `name` without parameters whose function body is `body`."""
    return (
        "import sys\n\nimport numpy as np\n\nfrom backtest.strategy import strategy\n\n\n"
        f"@strategy({name!r}, params=[], warmup=lambda p: {warmup})\n"
        f"def {name}(candles):\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n"
    )


def line_of(path: Path, text: str) -> int:
    """The (1-based) line of the module holding `text`."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def run(candle_file: Path, *args: str, strategy: str = "faulty") -> subprocess.CompletedProcess:
    return backtest_process("run", "--symbol", "ETHUSDT", "--input", str(candle_file), "--strategy", strategy, *args)


def class_strategy(signals_body: str) -> str:
    """A module with one class strategy `faulty` (no warm-up) whose `signals` runs `signals_body`."""
    body = "\n".join("        " + line for line in signals_body.strip("\n").splitlines())
    return f"""
import numpy as np
from backtest.strategy import Strategy, register


@register
class Faulty(Strategy):
    name = "faulty"

    def warmup_bars(self, params):
        return 0

    def signals(self, candles, combos):
{body}
"""


def one_error_line(proc: subprocess.CompletedProcess, code: int = EXIT_STRATEGY) -> str:
    """The run failed with `code`, printed nothing on stdout and exactly one line (no traceback) on stderr."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code and proc.stdout == "" and len(lines) == 1, proc
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_exit_5_is_not_retried():
    assert errors.EXIT_STRATEGY == EXIT_STRATEGY and EXIT_STRATEGY in errors.PERMANENT_EXIT_CODES
    assert errors.StrategyError("x").permanent and errors.StrategyError.exit_code == EXIT_STRATEGY


# -- read-only candles ------------------------------------------------------------------------


def test_a_strategy_that_mutates_its_candles_exits_5_and_writes_nothing(strategy_folder, candle_file, tmp_path):
    path = drop(
        strategy_folder, "faulty", function_strategy("close = candles.close\nclose /= close[0]\nreturn close > 1")
    )
    results = tmp_path / "results"
    line = one_error_line(run(candle_file, "--results-url", str(results)))
    assert line == (
        f"error: strategy faulty ({path}) wrote to its candles in signals at line {line_of(path, '/=')}: "
        "they are read-only (output array is read-only)"
    )
    assert not results.exists() or not any(results.iterdir())


@pytest.mark.parametrize(
    "write",
    [
        "candles.close[:] = 1.0",
        "candles.open.sort()",
        "np.log(candles.high, out=candles.high)",
        "candles.volume.fill(0)",
        "candles.open_time[0] = 0",
    ],
)
def test_every_candle_array_is_read_only_in_a_class_strategy(strategy_folder, candle_file, write):
    source = class_strategy(f"""
{write}
return np.zeros((len(combos), len(candles)), dtype=bool)
""")
    path = drop(strategy_folder, "faulty", source)
    line = one_error_line(run(candle_file))
    assert line.startswith(
        f"error: strategy faulty ({path}) wrote to its candles in signals at line {line_of(path, write)}"
    )


def test_the_strategy_gets_views_not_copies_and_the_engine_keeps_its_prices(strategy_folder):
    """In one process: a write is refused and changes nothing the engine reads; what the strategy
    gets shares the engine's memory (views: no copy, the cost is nil)."""
    drop(strategy_folder, "faulty", function_strategy("close = candles.close\nclose /= close[0]\nreturn close > 1"))
    drop(strategy_folder, "spy", function_strategy("SEEN.append(candles)\nreturn candles.close > 0", name="spy"))
    candles = synthetic_candles("ETHUSDT", EPOCH_MS, EPOCH_MS + 10 * DAY_MS)
    before = candles.close.copy()
    with pytest.raises(errors.StrategyError, match="wrote to its candles"):
        get("faulty").checked_signals(candles, [{}])
    np.testing.assert_array_equal(candles.close, before)
    assert candles.close.flags.writeable  # the engine's own arrays stay as they were

    spy = get("spy")
    spy.made_from.__globals__["SEEN"] = seen = []
    assert spy.checked_signals(candles, [{}]).all()
    (given,) = seen
    for name in ("open_time", "open", "high", "low", "close", "volume"):
        view, own = getattr(given, name), getattr(candles, name)
        assert not view.flags.writeable and np.shares_memory(view, own) and view is not own


# -- strict signals ---------------------------------------------------------------------------

BAD_OUTPUTS = {
    "floats 0/1": ("return (candles.close > candles.open).astype(float)", f"a float64 array of shape ({BARS},)"),
    "NaN": ("return np.full(len(candles), np.nan)", f"a float64 array of shape ({BARS},)"),
    "small floats": ("return np.full(len(candles), 0.01)", f"a float64 array of shape ({BARS},)"),
    "ints": ("return (candles.close > candles.open).astype(np.int64)", f"an int64 array of shape ({BARS},)"),
    "-1": ("return np.full(len(candles), -1)", f"an int64 array of shape ({BARS},)"),
    "strings": ('return np.array(["no"] * len(candles))', f"a <U2 array of shape ({BARS},)"),
    "object": ("return np.array([True] * len(candles), dtype=object)", f"an object array of shape ({BARS},)"),
    "short": ("return np.zeros(len(candles) - 1, dtype=bool)", f"a bool array of shape ({BARS - 1},)"),
    "2-d": ("return np.zeros((1, len(candles)), dtype=bool)", f"a bool array of shape (1, {BARS})"),
    "None": ("return None", "None"),
    "a list of ints": ("return [1] * len(candles)", f"a list (int64 values, shape ({BARS},))"),
    "a scalar": ("return True", "a bool (bool values, shape ())"),
}


@pytest.mark.parametrize("body, returned", BAD_OUTPUTS.values(), ids=BAD_OUTPUTS.keys())
def test_bad_signals_exit_5_naming_what_was_returned(strategy_folder, candle_file, body, returned):
    path = drop(strategy_folder, "faulty", function_strategy(body))
    line = one_error_line(run(candle_file))
    assert line == (
        f"error: strategy faulty ({path}) returned {returned} for no parameters: "
        f"expected a bool array of shape ({BARS},), one signal per candle"
    )
    check = backtest_process("check-strategy", "faulty", "--input", str(candle_file))  # the check says the same
    assert check.returncode == EXIT_STRATEGY and check.stderr.strip().splitlines() == [line], check


CLASS_OUTPUTS = {
    "floats": ("np.ones((len(combos), len(candles)))", f"a float64 array of shape (1, {BARS})"),
    "one row, 1-d": ("np.zeros(len(candles), dtype=bool)", f"a bool array of shape ({BARS},)"),
    "transposed": ("np.zeros((len(candles), len(combos)), dtype=bool)", f"a bool array of shape ({BARS}, 1)"),
    "uint8": ("np.zeros((len(combos), len(candles)), dtype=np.uint8)", f"a uint8 array of shape (1, {BARS})"),
}


@pytest.mark.parametrize("output, returned", CLASS_OUTPUTS.values(), ids=CLASS_OUTPUTS.keys())
def test_bad_signals_of_a_class_strategy_exit_5(strategy_folder, candle_file, output, returned):
    source = class_strategy(f"""
return {output}
""")
    path = drop(strategy_folder, "faulty", source)
    line = one_error_line(run(candle_file))
    assert line == (
        f"error: strategy faulty ({path}) returned {returned} from signals: "
        f"expected a bool array of shape (1, {BARS}), one signal per combination and candle"
    )


def test_bool_array_likes_are_signals(strategy_folder, candle_file):
    """A list of Python bools is bool: accepted, as is a bool array."""
    drop(
        strategy_folder,
        "faulty",
        function_strategy("return [bool(c > o) for c, o in zip(candles.close, candles.open)]"),
    )
    listed = run(candle_file)
    drop(strategy_folder, "faulty", function_strategy("return candles.close > candles.open"))
    array = run(candle_file)
    assert listed.returncode == array.returncode == 0, (listed.stderr, array.stderr)
    assert json.loads(listed.stdout)["total_return"] == json.loads(array.stdout)["total_return"]


# -- raising or exiting in its code ------------------------------------------------------------


@pytest.mark.parametrize(
    "body, did",
    [
        (
            "return len(candles) // 0",
            "raised ZeroDivisionError in signals at line {line}: integer division or modulo by zero",
        ),
        ('raise KeyError("close")', "raised KeyError in signals at line {line}: 'close'"),
        ('raise RuntimeError("two\\nlines")', "raised RuntimeError in signals at line {line}: two lines"),
        ("raise RuntimeError()", "raised RuntimeError in signals at line {line}"),
        ("sys.exit(0)", "exited (sys.exit(0)) in signals at line {line}"),
        ("sys.exit(3)", "exited (sys.exit(3)) in signals at line {line}"),
    ],
)
def test_a_strategy_raising_in_its_signals_exits_5_with_one_line(strategy_folder, candle_file, tmp_path, body, did):
    path = drop(strategy_folder, "faulty", function_strategy(body))
    results = tmp_path / "results"
    line = one_error_line(run(candle_file, "--results-url", str(results)))
    assert line == f"error: strategy faulty ({path}) {did.format(line=line_of(path, body.split('(')[0]))}"
    assert not results.exists()


def test_a_strategy_raising_in_reject_or_lookback_exits_5(strategy_folder, candle_file):
    source = """
import numpy as np
from backtest.strategy import Param, Strategy, register


@register
class Faulty(Strategy):
    name = "faulty"
    params = (Param("k", 1, low=0, high=10),)

    def warmup_bars(self, params):
        return params["k"]

    def lookback(self, params):
        return params["k"] - 2  # negative for k < 2

    def reject(self, params):
        return {}["nothing"] if params["k"] == 0 else None

    def signals(self, candles, combos):
        return np.zeros((len(combos), len(candles)), dtype=bool)
"""
    path = drop(strategy_folder, "faulty", source)
    line = one_error_line(run(candle_file, "--param", "k=0"))
    assert (
        line
        == f"error: strategy faulty ({path}) raised KeyError in reject at line {line_of(path, 'nothing')}: 'nothing'"
    )
    line = one_error_line(run(candle_file, "--param", "k=1"))
    assert line == (
        f"error: strategy faulty ({path}) declared a lookback of -1 (int) for k=1: "
        "it must be a whole number of bars, 0 or more"
    )


# -- import -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, did",
    [
        ("import sys\nsys.exit(0)\n", "it exited (sys.exit(0))"),
        ("raise SystemExit\n", "it exited (sys.exit(None))"),
        ('raise RuntimeError("no\\nluck")\n', "RuntimeError: no luck"),
        ("import no_such_module_anywhere\n", "ModuleNotFoundError: No module named 'no_such_module_anywhere'"),
    ],
)
def test_a_module_that_exits_or_raises_at_import_exits_5(strategy_folder, candle_file, source, did):
    path = drop(strategy_folder, "broken", source)
    for args in (("list-strategies",), ("run", "--symbol", "ETHUSDT", "--input", str(candle_file))):
        line = one_error_line(backtest_process(*args))
        assert line == f"error: strategy module {path} failed to import: {did}"


# -- warm-up ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "warmup, shown",
    [
        ("-100", "-100 (int)"),
        ('float("nan")', "nan (float)"),
        ("2.5", "2.5 (float)"),
        ("24.0", "24.0 (float)"),
        ('"24"', "'24' (str)"),
        ("None", "None (NoneType)"),
        ("True", "True (bool)"),
        ("np.float64(24)", "24.0 (float64)"),
    ],
)
def test_a_bad_warmup_exits_5(strategy_folder, candle_file, warmup, shown):
    path = drop(strategy_folder, "faulty", function_strategy("return candles.close > candles.open", warmup=warmup))
    expected = (
        f"error: strategy faulty ({path}) declared a warm-up of {shown} for no parameters: "
        "it must be a whole number of bars, 0 or more"
    )
    assert one_error_line(run(candle_file)) == expected
    check = backtest_process("check-strategy", "faulty", "--input", str(candle_file))
    assert check.returncode == EXIT_STRATEGY and check.stderr.strip().splitlines() == [expected], check


def test_a_warmup_that_raises_exits_5(strategy_folder, candle_file):
    path = drop(strategy_folder, "faulty", function_strategy("return candles.close > 0", warmup='p["window"]'))
    line = one_error_line(run(candle_file))
    assert (
        line
        == f"error: strategy faulty ({path}) raised KeyError in warmup_bars at line {line_of(path, 'warmup=')}: 'window'"
    )


def test_numpy_integer_warmups_are_whole_bars(strategy_folder, candle_file):
    drop(strategy_folder, "faulty", function_strategy("return candles.close > candles.open", warmup="np.int64(24)"))
    proc = run(candle_file, "--start", "2017-01-05")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["warmup_bars"] == 24


# -- stdout stays the JSON --------------------------------------------------------------------


def test_a_strategys_print_goes_to_stderr(strategy_folder, candle_file):
    source = 'print("importing")\n' + function_strategy(
        'print("in signals", len(candles))\nreturn candles.close > candles.open', warmup='print("warm-up") or 0'
    )
    drop(strategy_folder, "faulty", source)
    proc = run(candle_file)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1 and json.loads(proc.stdout)["strategy"] == "faulty"
    assert "importing" in proc.stderr and f"in signals {BARS}" in proc.stderr and "warm-up" in proc.stderr
    listed = backtest_process("list-strategies")
    assert listed.returncode == 0 and "faulty" in {item["name"] for item in json.loads(listed.stdout)}


# -- one pair's failure stays in its pair -----------------------------------------------------

PAIRS = ("AAAUSDT", "BBBUSDT", "CCCUSDT")


@pytest.fixture
def three_pairs(tmp_path) -> str:
    """A store of three synthetic pairs at different price levels: only the middle's first close
    is between 1 and 1000."""
    url = str(tmp_path / "store")
    for symbol in PAIRS:
        candles = synthetic_candles(symbol, STORE_SINCE, STORE_SINCE + 30 * DAY_MS)
        CandleStore(url).write(symbol, candles, "synthetic")
        assert (1 < candles.close[0] < 1000) == (symbol == "BBBUSDT")
    return url


def test_a_strategy_failing_on_one_pair_of_a_chunk_fails_that_pair_only(strategy_folder, three_pairs, tmp_path):
    body = 'if 1 < candles.close[0] < 1000:\n    raise ValueError("no price in this range")\nreturn candles.close > candles.open'
    path = drop(strategy_folder, "faulty", function_strategy(body))
    results = tmp_path / "results"
    proc = backtest_process(
        "run", "--symbol", ",".join(PAIRS), "--data-url", three_pairs, "--strategy", "faulty",
        "--results-url", str(results), env={**os.environ, "BACKTEST_JOB_NAME": "job-1"},
    )  # fmt: skip
    assert proc.returncode == EXIT_STRATEGY, proc.stderr
    assert "Traceback" not in proc.stderr
    message = f"strategy faulty ({path}) raised ValueError in signals at line {line_of(path, 'raise')}: no price in this range"
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].endswith(f"BBBUSDT failed: {message}"), proc.stderr

    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [item["symbol"] for item in out] == list(PAIRS)
    assert out[1] == {"symbol": "BBBUSDT", "error": message, "exit_code": EXIT_STRATEGY}
    for item in (out[0], out[2]):
        assert json.loads((results / f"{item['symbol']}.json").read_text()) == item
        assert (results / f"{item['symbol']}.equity.parquet").is_file()
    assert not (results / "BBBUSDT.json").exists()
    assert json.loads((results / "BBBUSDT.error.json").read_text()) == out[1]
    record = json.loads((results / "_jobs" / "job-1.json").read_text())
    assert record["symbols"] == list(PAIRS) and record["failed"] == ["BBBUSDT"]


def test_a_bug_of_ours_is_not_the_strategys_fault(capsys, monkeypatch, three_pairs):
    """Only the strategy's calls are wrapped: an exception of the engine (here planted in the
    second pair) is no strategy error, it propagates (exit 1 with a traceback)."""
    metrics, calls = Segment.metrics, []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("a bug of ours")
        return metrics(self, *args, **kwargs)

    monkeypatch.setattr(Segment, "metrics", failing)
    with pytest.raises(RuntimeError, match="a bug of ours"):
        main(
            ["run", "--symbol", ",".join(PAIRS), "--data-url", three_pairs, "--strategy", "sma_trend", "--window", "24"]
        )


def test_a_builtin_strategys_exception_is_a_bug(monkeypatch):
    """A built-in strategy is our code: what it raises stays a bug, not exit 5."""
    sma_trend = get("sma_trend")
    monkeypatch.setattr(type(sma_trend), "signals", lambda self, candles, combos: 1 // 0)
    candles = synthetic_candles("ETHUSDT", EPOCH_MS, EPOCH_MS + 2 * DAY_MS)
    with pytest.raises(ZeroDivisionError):
        sma_trend.checked_signals(candles, [{"window": 24}])


def test_an_exception_whose_message_cannot_be_read_is_still_one_line(strategy_folder, candle_file):
    body = 'raise type("Odd", (Exception,), {"__str__": lambda self: 1 / 0})()'
    path = drop(strategy_folder, "faulty", function_strategy(body))
    line = one_error_line(run(candle_file))
    assert line == f"error: strategy faulty ({path}) raised Odd in signals at line 10: (its message could not be read)"
