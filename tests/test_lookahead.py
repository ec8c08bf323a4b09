"""`python -m backtest check-strategy`: every registered strategy passes; a strategy that peeks at
the next close and ones whose warm-up is too short fail with exit 5 and the offending bar."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from backtest import strategy
from backtest.cli import main
from backtest.data.synthetic import EPOCH_MS, synthetic_candles
from backtest.errors import EXIT_CHECK
from backtest.params import HOUR_MS, format_time_ms
from backtest.strategies.lookahead import MAX_COMBOS_CHECKED, MIN_WINDOW_BARS, SEEDED_TOLERANCE
from tests.support import backtest_process, make_candles

REAL_BTC = "binance_spot_BTCUSDT_1h_misrori.csv"


def check(capsys, *args: str) -> tuple[int, dict, str]:
    """`python -m backtest check-strategy ARGS` in this process: (exit code, JSON report, stderr)."""
    code = main(["check-strategy", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


# CI runs the check for every registered strategy: the built-ins and the project's strategies/.
@pytest.mark.parametrize("name", strategy.names())
def test_every_registered_strategy_passes_with_its_defaults(capsys, name):
    code, report, err = check(capsys, name)
    assert code == 0 and err == "", err
    grid = strategy.grid_of(name)
    warmup = grid.warmup_bars()
    assert report["ok"] is True and "problem" not in report
    assert report["strategy"] == name and report["cuts"] == 60
    assert report["candles"] == 2 * warmup + MIN_WINDOW_BARS  # synthetic candles, as many as check (b) needs
    (checked,) = report["checked"]
    assert checked["params"] == grid.params_json(0) and checked["ok"] is True
    assert checked["window_bars"] == MIN_WINDOW_BARS
    allowed = int(SEEDED_TOLERANCE * MIN_WINDOW_BARS) if grid.strategy.seeded else 0
    assert 0 <= checked["warmup_changed"] <= allowed


def test_a_grid_is_checked_at_several_combinations(capsys):
    code, report, _ = check(capsys, "sma_cross", "--param", "fast=6,12,1d", "--param", "slow=2d,5d")
    assert code == 0
    assert [c["params"] for c in report["checked"]] == [
        {"fast": f, "fast_bars": fb, "slow": s, "slow_bars": sb}
        for f, fb in (("6", 6), ("12", 12), ("1d", 24))
        for s, sb in (("2d", 48), ("5d", 120))
    ]
    # A larger grid: MAX_COMBOS_CHECKED of them, its first and last included, evenly spread.
    code, report, _ = check(capsys, "momentum", "--param", "lookback=1:40:1")
    checked = [c["params"]["lookback_bars"] for c in report["checked"]]
    assert code == 0 and len(checked) == MAX_COMBOS_CHECKED and checked[0] == 1 and checked[-1] == 40
    assert max(np.diff(checked)) - min(np.diff(checked)) <= 1
    assert report["candles"] == 2 * 40 + MIN_WINDOW_BARS  # enough for the longest warm-up checked


def test_bad_parameters_and_too_few_candles(capsys, tmp_path):
    assert main(["check-strategy", "sma_cross", "--param", "fast=5d", "--param", "slow=1d"]) == 2
    assert main(["check-strategy", "nope"]) == 2
    path = tmp_path / "short.parquet"
    pq.write_table(synthetic_candles("ETHUSDT", EPOCH_MS, EPOCH_MS + 500 * HOUR_MS).to_table(), path)
    assert main(["check-strategy", "sma_trend", "--input", str(path)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "500 candles are too few to check a warm-up of 359 bars: need 1718" in err


# -- strategies that must fail -----------------------------------------------------------------

PEEK = '''
import numpy as np
from backtest.strategy import strategy


@strategy("peek", params=[], warmup=lambda p: 1)
def peek(candles):
    """long when the next close is higher: looks ahead"""
    close = candles.close
    out = np.zeros(len(close), dtype=bool)
    out[:-1] = close[1:] > close[:-1]
    return out
'''

LAG = '''
import numpy as np
from backtest.strategy import Param, strategy


@strategy("lag", params=[Param("k", "5", low=1, high=1000, bars=True)], warmup=lambda p: min(p["k"], 10))
def lag(candles, k):
    """momentum whose declared warm-up stops at 10 bars: too short from k = 11 on"""
    close = candles.close
    out = np.zeros(len(close), dtype=bool)
    out[k:] = close[k:] > close[:-k]
    return out
'''

EMA_ONE_SPAN = '''
from backtest.strategies.builtins import EmaTrend
from backtest.strategy import register


@register
class EmaOneSpan(EmaTrend):
    """ema_trend declaring 1 span of warm-up instead of 5: its seed still shows"""

    name = "ema_one_span"

    def warmup_bars(self, params):
        return params["span"]
'''


@pytest.fixture
def bad_strategies(tmp_path) -> dict[str, str]:
    folder = tmp_path / "strategies"
    folder.mkdir()
    for name, text in {"peek": PEEK, "lag": LAG, "ema_one_span": EMA_ONE_SPAN}.items():
        (folder / f"{name}.py").write_text(text)
    return {**os.environ, "BACKTEST_STRATEGY_PATH": str(folder)}


def _failed(proc: subprocess.CompletedProcess) -> tuple[dict, str]:
    """A failed check: exit 5, the JSON report on stdout, one line on stderr (the report's problem)."""
    assert proc.returncode == EXIT_CHECK, proc
    report, lines = json.loads(proc.stdout), proc.stderr.strip().splitlines()
    assert report["ok"] is False and lines == [f"error: {report['problem']}"]
    return report, lines[0]


def _valley(path: Path, bars: int = 1200, turn: int = 150) -> np.ndarray:
    """Closes falling until bar `turn - 1`, rising after: the first close above the one before is at `turn`."""
    close = np.concatenate((np.linspace(200.0, 100.0, turn), np.linspace(101.0, 300.0, bars - turn)))
    pq.write_table(make_candles(close, close, start_ms=EPOCH_MS).to_table(), path)
    return close


def test_a_strategy_that_peeks_at_the_next_close_fails(bad_strategies, tmp_path):
    """On candles falling then rising at bar 150, the first bar whose signal uses a later candle is
    149 (c_150 > c_149); with a cut at every bar the check names exactly that bar and cut."""
    path = tmp_path / "valley.parquet"
    close = _valley(path)
    proc = backtest_process(
        "check-strategy", "peek", "--input", str(path), "--cuts", str(len(close)), env=bad_strategies
    )
    report, line = _failed(proc)
    first, cut = format_time_ms(EPOCH_MS + 149 * HOUR_MS), format_time_ms(EPOCH_MS + 150 * HOUR_MS)
    assert line == (
        f"error: peek: looks ahead: the signal at bar 149 ({first}) is 1 with all candles "
        f"but 0 when the candles from bar 150 ({cut}) on are removed"
    )
    assert report["checked"] == [{"params": {}, "ok": False}]

    # With the default 60 cuts on synthetic candles: the bar it names really does change.
    report, line = _failed(backtest_process("check-strategy", "peek", env=bad_strategies))
    t, m = (int(x) for x in re.search(r"signal at bar (\d+) .* candles from bar (\d+) ", line).groups())
    candles = synthetic_candles("CHECKUSDT", EPOCH_MS, EPOCH_MS + report["candles"] * HOUR_MS)
    assert t == m - 1 and candles.close[t + 1] > candles.close[t]  # 1 with c_{t+1}; nothing after bar t when cut at m


def test_a_warmup_too_short_fails_at_the_first_changed_bar(bad_strategies, tmp_path):
    """lag k=50 declares 10 warm-up bars: the window starts at bar 20; read from bar 10, the signal
    is undefined until bar 60, read from 0 defined from bar 50: bars 50..59 change where it is 1."""
    path = tmp_path / "candles.parquet"
    close = 100 * np.exp(np.cumsum(np.random.default_rng(8).normal(0, 0.01, 1100)))  # c_t > c_{t-50} at 57, 58
    candles = make_candles(close, close, start_ms=EPOCH_MS)
    pq.write_table(candles.to_table(), path)
    proc = backtest_process("check-strategy", "lag", "--param", "k=5,50", "--input", str(path), env=bad_strategies)
    report, line = _failed(proc)
    changed = [t for t in range(50, 60) if close[t] > close[t - 50]]
    assert 0 < len(changed) < 10 and changed[0] > 50
    share = len(changed) / (len(candles) - 20)
    assert line == (
        f"error: lag k=50: warm-up too short: with 10 bars declared, {len(changed)} window bars ({share:.2%}; "
        f"allowed: none) change when 20 are read, the first at bar {changed[0]} "
        f"({format_time_ms(EPOCH_MS + changed[0] * HOUR_MS)})"
    )
    # Both combinations were checked: k=5 passed (it declares 5 bars, all it needs), k=50 did not.
    assert report["checked"] == [
        {"params": {"k": "5", "k_bars": 5}, "warmup_changed": 0, "window_bars": len(candles) - 10, "ok": True},
        {
            "params": {"k": "50", "k_bars": 50},
            "warmup_changed": len(changed),
            "window_bars": len(candles) - 20,
            "ok": False,
        },
    ]


def test_a_seeded_strategy_beyond_the_tolerance_fails(bad_strategies):
    """ema_trend with 1 span of warm-up instead of 5: more than SEEDED_TOLERANCE of the window's bars
    change when 2 spans are read (the built-in, with 5 spans, changes none)."""
    report, line = _failed(backtest_process("check-strategy", "ema_one_span", env=bad_strategies))
    (checked,) = report["checked"]
    assert checked["warmup_changed"] > SEEDED_TOLERANCE * checked["window_bars"]
    assert "warm-up too short: with 360 bars declared" in line and "allowed: at most 1%" in line
    ok = backtest_process("check-strategy", "ema_trend", env=bad_strategies)
    assert ok.returncode == 0 and json.loads(ok.stdout)["checked"][0]["warmup_changed"] == 0


# -- real candles -----------------------------------------------------------------------------------

# Each built-in with its defaults (60 cuts), and grids (20 cuts each: 24k bars per cut).
REAL_CASES = [
    ("sma_trend", []),
    ("sma_cross", ["--param", "fast=1d:10d:1d", "--param", "slow=5d:60d:5d", "--cuts", "20"]),
    ("momentum", ["--param", "lookback=1h,1d,7d,30d", "--cuts", "20"]),
    ("ema_trend", []),
    ("ema_trend", ["--param", "span=1d,60d", "--cuts", "20"]),
    ("donchian_breakout", []),
    ("donchian_breakout", ["--param", "entry=1d,20d", "--param", "exit=12h,10d", "--cuts", "20"]),
    ("rsi_reversion", []),
    ("rsi_reversion", ["--param", "period=7,24", "--param", "lower=20,30", "--param", "upper=70,80", "--cuts", "20"]),
]


@pytest.mark.parametrize("name, params", REAL_CASES, ids=[f"{n}{'-grid' if p else ''}" for n, p in REAL_CASES])
def test_builtins_pass_on_real_btcusdt(capsys, shared_data, name, params):
    code, report, err = check(capsys, name, *params, "--input", str(shared_data / REAL_BTC))
    assert code == 0 and report["ok"], err
    assert report["candles"] > 20_000
    for checked in report["checked"]:
        share = checked["warmup_changed"] / checked["window_bars"]
        assert share <= (SEEDED_TOLERANCE if strategy.get(name).seeded else 0)
        print(f"{name} {checked['params']}: {checked['warmup_changed']} of {checked['window_bars']} bars ({share:.3%})")
