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
from backtest.strategies import lookahead
from backtest.strategies.lookahead import MAX_COMBOS_CHECKED, MIN_WINDOW_BARS, SEEDED_TOLERANCE
from backtest_airflow.run_strategies import lookahead_problems
from tests.support import backtest_process, make_candles
from tests.support.strategies import BOLLINGER_PEEK_AHEAD, BOLLINGER_PEEK_NEXT, drop

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
    # synthetic candles, as many as check (b) needs: twice the warm-up, at least MIN_WARMUP_MARGIN more
    assert report["candles"] == warmup + max(warmup, lookahead.MIN_WARMUP_MARGIN) + MIN_WINDOW_BARS
    assert report["cut_kinds"] == ["sampled", "changes"]
    (checked,) = report["checked"]
    cut_points = checked["cut_points"]
    assert cut_points["sampled"] == 60 and cut_points["checked"] == cut_points["total"] == report["cut_points"]
    assert 60 <= cut_points["total"] <= 60 + cut_points["changes"]
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
    assert (
        report["candles"] == lookahead.reference_warmup(40) + MIN_WINDOW_BARS
    )  # enough for the longest warm-up checked


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
    # Every bar from 1 (its lookback) to 1198 is a cut (1,200 sampled: capped at the bars), bars 1..149 ran;
    # its signal changes at 149 and 1199 (the last bar: no next close), so 148, 149 and 1198 are cuts too.
    cut_points = {"sampled": 1198, "changes": 3, "total": 1198, "checked": 149}
    assert report["checked"] == [{"params": {}, "cut_points": cut_points, "ok": False}]
    assert report["cut_points"] == 149 and report["cuts"] == len(close)

    # With the default 60 cuts on synthetic candles: the bar it names really does change.
    report, line = _failed(backtest_process("check-strategy", "peek", env=bad_strategies))
    t, m = (int(x) for x in re.search(r"signal at bar (\d+) .* candles from bar (\d+) ", line).groups())
    candles = synthetic_candles("CHECKUSDT", EPOCH_MS, EPOCH_MS + report["candles"] * HOUR_MS)
    assert t == m - 1 and candles.close[t + 1] > candles.close[t]  # 1 with c_{t+1}; nothing after bar t when cut at m


def test_a_warmup_too_short_fails_at_the_first_changed_bar(bad_strategies, tmp_path):
    """lag k=50 declares 10 warm-up bars: the window starts at bar 110 (10 + MIN_WARMUP_MARGIN); read
    from bar 100, the signal is undefined until bar 150, read from 0 defined from bar 50: bars
    110..149 change where it is 1."""
    path = tmp_path / "candles.parquet"
    close = 100 * np.exp(np.cumsum(np.random.default_rng(8).normal(0, 0.01, 1200)))  # c_t > c_{t-50}: 10 of 40
    candles = make_candles(close, close, start_ms=EPOCH_MS)
    pq.write_table(candles.to_table(), path)
    proc = backtest_process("check-strategy", "lag", "--param", "k=5,50", "--input", str(path), env=bad_strategies)
    report, line = _failed(proc)
    assert lookahead.MIN_WARMUP_MARGIN == 100
    changed = [t for t in range(110, 150) if close[t] > close[t - 50]]
    assert 0 < len(changed) < 40
    share = len(changed) / (len(candles) - 110)
    assert line == (
        f"error: lag k=50: warm-up too short: with 10 bars declared, {len(changed)} window bars ({share:.2%}; "
        f"allowed: none) change when 110 are read, the first at bar {changed[0]} "
        f"({format_time_ms(EPOCH_MS + changed[0] * HOUR_MS)})"
    )
    # Both combinations were checked: k=5 passed (it declares 5 bars, all it needs), k=50 did not.
    # (Both pass check (a), at every cut: lag is causal.)
    for entry in report["checked"]:
        cut_points = entry.pop("cut_points")
        assert cut_points["checked"] == cut_points["total"] >= cut_points["sampled"] == 60
    assert report["checked"] == [
        {"params": {"k": "5", "k_bars": 5}, "warmup_changed": 0, "window_bars": len(candles) - 105, "ok": True},
        {
            "params": {"k": "50", "k_bars": 50},
            "warmup_changed": len(changed),
            "window_bars": len(candles) - 110,
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


# -- sparse peeks: the cuts at every change of the signal (issue 20) --------------------------------

REAL_ETH = "binance_spot_ETHUSDT_1h_misrori.csv"
SPARSE_PEEKS = {"bollinger_peek_next": (BOLLINGER_PEEK_NEXT, 1), "bollinger_peek_ahead": (BOLLINGER_PEEK_AHEAD, 5)}


def _failed_here(capsys, *args: str) -> tuple[dict, str]:
    """A failed check in this process: exit 5, the JSON report, one line on stderr (its problem)."""
    code, report, err = check(capsys, *args)
    assert code == EXIT_CHECK and report["ok"] is False
    assert err.splitlines() == [f"error: {report['problem']}"]
    return report, err.splitlines()[0]


def _looks_ahead_at(line: str) -> tuple[int, int]:
    """(the bar named, the first bar removed) of a `looks ahead` line."""
    match = re.search(
        r"looks ahead: the signal at bar (\d+) \(.*\) is [01] with all candles but [01] when the candles from bar (\d+) ",
        line,
    )
    assert match, line
    return int(match[1]), int(match[2])


def _signal(name: str, candles, **params: str) -> np.ndarray:
    grid = strategy.grid_of(name, params)
    return grid.strategy.checked_signals(candles, grid.combos)[0]


def _sampled(first: int, bars: int, cuts: int = 60) -> np.ndarray:
    """The sampled cuts: `cuts` bars evenly spaced from `first` to the last bar but one."""
    return np.unique(np.linspace(first, bars - 2, cuts).round().astype(np.int64))


def _jumps(path: Path, bars: int = 1200) -> list[int]:
    """Quiet closes (0.2 % an hour) with a one-bar rise of 4 % at five bars, each midway between two
    of the 60 sampled cuts (bollinger's lookback is 23): the sampled cuts alone never see one."""
    close = 100 * np.exp(np.cumsum(np.random.default_rng(20).normal(0, 0.002, bars)))
    sampled = _sampled(23, bars)
    jumps = [int(sampled[i] + sampled[i + 1]) // 2 + 2 for i in (10, 20, 30, 40, 50)]
    for j in jumps:
        close[j:] *= 1.04
    pq.write_table(make_candles(close, close, start_ms=EPOCH_MS).to_table(), path)
    return jumps


@pytest.mark.parametrize("name", SPARSE_PEEKS)
def test_a_sparse_peek_before_a_large_move_fails_on_synthetic_candles(capsys, strategy_folder, tmp_path, name):
    """Bollinger reversion plus a long `ahead` bars before a > 3 % one-bar rise (1 and 5 bars): only the
    bars before the five rises change. The check names the first of them, caught by the cuts at the
    signal's changes; the 60 sampled cuts alone (the check before issue 20) pass it."""
    source, ahead = SPARSE_PEEKS[name]
    drop(strategy_folder, name, source)
    path = tmp_path / "jumps.parquet"
    jumps = _jumps(path)
    candles = lookahead.check_candles(str(path))
    peeking, honest = _signal(name, candles), _signal(name, candles, rise="1000")
    differs = np.flatnonzero(peeking != honest)
    assert 0 < len(differs) <= len(jumps) and set(differs) <= {j - ahead for j in jumps}

    report, line = _failed_here(capsys, name, "--input", str(path))
    bar, removed = _looks_ahead_at(line)
    assert bar == differs[0] and bar < removed <= bar + ahead and " is 1 with all candles but 0 " in line
    assert line.startswith(f"error: {name} window=1d width=2.0 rise=3.0: looks ahead: the signal at bar {bar} ")
    assert report["cut_kinds"] == ["sampled", "changes"] and report["cuts"] == 60
    # The honest strategy passes; the peeking one passes the sampled cuts alone.
    code, _, err = check(capsys, name, "--param", "rise=1000", "--input", str(path))
    assert code == 0, err
    assert lookahead.check_grid(strategy.grid_of(name), candles, cuts=60, at_changes=False)["ok"] is True
    assert lookahead.cut_bars(peeking, 23, 60)["sampled"].tolist() == _sampled(23, len(candles)).tolist()


@pytest.mark.parametrize("name, rise", [("bollinger_peek_next", "3"), ("bollinger_peek_ahead", "5")])
def test_a_sparse_peek_before_a_large_move_fails_on_real_ethusdt(capsys, shared_data, strategy_folder, name, rise):
    """On real ETHUSDT (23,989 hours): the bar before a > 3 % hourly rise, and the bar 5 bars before a > 5 %
    one (149 and 22 such rises): both passed the 60 sampled cuts; now the first bar changed is named."""
    source, ahead = SPARSE_PEEKS[name]
    drop(strategy_folder, name, source)
    path = shared_data / REAL_ETH
    report, line = _failed_here(capsys, name, "--param", f"rise={rise}", "--input", str(path))
    bar, removed = _looks_ahead_at(line)
    candles = lookahead.check_candles(str(path))
    assert report["candles"] == len(candles) > 20_000
    rise_bar = bar + ahead
    assert candles.close[rise_bar] > candles.close[rise_bar - 1] * (1 + float(rise) / 100)  # the move it peeks at
    assert bar < removed <= rise_bar
    differs = np.flatnonzero(_signal(name, candles, rise=rise) != _signal(name, candles, rise="1000"))
    assert bar == differs[0]  # the first bar the peek changes
    sampled_only = lookahead.check_grid(strategy.grid_of(name, {"rise": rise}), candles, cuts=60, at_changes=False)
    assert sampled_only["ok"] is True


def test_plans_quick_check_refuses_both_sparse_peeks(strategy_folder):
    """plan's quick check (LOOKAHEAD_CUTS = 12 sampled cuts, and the changes) on its synthetic candles."""
    for name, (source, _) in SPARSE_PEEKS.items():
        drop(strategy_folder, name, source)
    entries = [{"name": "sma_trend", "params": {}}, *({"name": name, "params": {}} for name in SPARSE_PEEKS)]
    problems = lookahead_problems(entries)
    assert [p.split(":")[0] for p in problems] == [f"{name} window=1d width=2.0 rise=3.0" for name in SPARSE_PEEKS]
    assert all(": looks ahead: the signal at bar " in p for p in problems)


SKIP_LOSERS = '''
import numpy as np
from backtest.strategy import Param, strategy


@strategy("skip_losers", params=[Param("level", 100.0, low=0.0, high=1e9, kind=float)], warmup=lambda p: 0)
def skip_losers(candles, level):
    """long while the close is above `level`, but not through a stretch above it whose last close is lower than its first"""
    close = candles.close
    out = close > level
    edges = np.flatnonzero(np.diff(np.concatenate(([0], out.astype(np.int8), [0]))))
    for start, stop in zip(edges[::2], edges[1::2]):  # out[start:stop]: one stretch above the level
        if stop < len(close) and close[stop - 1] < close[start]:
            out[start:stop] = False  # it ends lower: skipped whole (its last close is read at its first bar)
    return out
'''


def test_the_default_cuts_can_miss_a_peek_that_skips_a_whole_episode_and_all_does_not(
    capsys, strategy_folder, tmp_path
):
    """The one peek the default cuts may miss (lookahead's docstring): the live signal's whole episode
    skipped, so the run's signal has no change there. Here one stretch above the level ends lower than
    it began and is skipped, between two sampled cuts: the default check passes, `--cuts all` names
    the stretch's first bar."""
    drop(strategy_folder, "skip_losers", SKIP_LOSERS)
    close = np.full(1200, 90.0)
    close[300:320] = np.linspace(110.0, 115.0, 20)  # a stretch that ends higher: traded (changes at 300, 320)
    sampled = _sampled(0, 1200)
    start = int(sampled[30]) + 3
    close[start : start + 10] = np.linspace(110.0, 105.0, 10)  # ends lower than it began: skipped
    assert not set(range(start, start + 10)) & set(sampled.tolist())
    path = tmp_path / "episodes.parquet"
    pq.write_table(make_candles(close, close, start_ms=EPOCH_MS).to_table(), path)

    code, report, err = check(capsys, "skip_losers", "--input", str(path))
    assert code == 0 and report["ok"], err  # the gap the docs name
    report, line = _failed_here(capsys, "skip_losers", "--input", str(path), "--cuts", "all")
    assert _looks_ahead_at(line) == (start, start + 1)
    assert report["cut_kinds"] == ["all"] and report["cuts"] == "all"
    assert report["checked"][0]["cut_points"] == {"all": 1199, "total": 1199, "checked": start + 1}


def test_cut_bars_are_the_sampled_bars_and_every_change_with_the_bar_before():
    full = np.array([0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1], dtype=bool)  # changes at 3, 5, 10
    kinds = lookahead.cut_bars(full, 2, 3)
    assert kinds["sampled"].tolist() == [2, 6, 10]  # from the first bar to n - 2, evenly
    assert kinds["changes"].tolist() == [2, 3, 4, 5, 9, 10]
    assert lookahead.cut_bars(full, 2, 1)["sampled"].tolist() == [2, 10]  # the ends, always
    assert lookahead.cut_bars(full, 2, 10**9)["sampled"].tolist() == list(range(2, 11))  # capped: every bar
    (every,) = lookahead.cut_bars(full, 2, "all").values()
    assert every.tolist() == list(range(2, 11))
    assert "changes" not in lookahead.cut_bars(full, 2, 3, at_changes=False)
    assert lookahead.cut_bars(full, 11, 3) == {}  # nothing to cut


# -- warm-up and --cuts -------------------------------------------------------------------------------

SMA_NO_WARMUP = '''
import numpy as np
from backtest.strategy import Param, strategy


@strategy("sma_no_warmup", params=[Param("declared", 0, low=0, high=100)], warmup=lambda p: p["declared"])
def sma_no_warmup(candles, declared):
    """long above the 24-bar SMA, declaring `declared` bars of warm-up (it needs 23)"""
    close = candles.close
    out = np.zeros(len(close), dtype=bool)
    if len(close) >= 24:
        out[23:] = close[23:] > np.convolve(close, np.full(24, 1 / 24), "valid")
    return out
'''


@pytest.mark.parametrize("declared", [0, 5, 22])
def test_a_warmup_of_zero_or_too_small_fails(capsys, strategy_folder, declared):
    """Twice 0 is 0: the longer warm-up is also at least MIN_WARMUP_MARGIN bars more than declared."""
    drop(strategy_folder, "sma_no_warmup", SMA_NO_WARMUP)
    report, line = _failed_here(capsys, "sma_no_warmup", "--param", f"declared={declared}")
    read = declared + 100  # lookahead.MIN_WARMUP_MARGIN more than declared
    assert f"warm-up too short: with {declared} bars declared, " in line and f"change when {read} are read" in line
    assert report["candles"] == lookahead.reference_warmup(declared) + MIN_WINDOW_BARS == read + MIN_WINDOW_BARS
    code, report, err = check(capsys, "sma_no_warmup", "--param", "declared=23")
    assert code == 0 and report["checked"][0]["warmup_changed"] == 0, err


@pytest.mark.parametrize("cuts", ["0", "-3", "abc", "1_0", "", "2.5"])
def test_cuts_must_be_a_whole_number_of_at_least_one_or_all(capsys, cuts):
    assert main(["check-strategy", "momentum", "--cuts", cuts]) == 2
    out, err = capsys.readouterr()
    expected = "error: --cuts is empty: " if cuts == "" else f"error: invalid --cuts {cuts!r}: must be "
    assert out == "" and err.startswith(expected) and err.count("\n") == 1


def test_cuts_above_the_bars_are_every_bar_and_all_cuts_every_bar(capsys):
    """--cuts 1000000000 is capped at the bars (it once tried to allocate 7.45 GiB); `all` is the same cuts."""
    proc = backtest_process("check-strategy", "momentum", "--cuts", "1000000000")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    report = json.loads(proc.stdout)
    lookback = strategy.get("momentum").lookback(strategy.grid_of("momentum").combos[0])
    every = report["candles"] - 1 - lookback  # bars lookback .. n - 2
    (checked,) = report["checked"]
    assert checked["cut_points"]["sampled"] == checked["cut_points"]["total"] == every == report["cut_points"]
    code, report, err = check(capsys, "momentum", "--cuts", "all")
    assert code == 0 and err == ""
    assert report["cuts"] == "all" and report["cut_kinds"] == ["all"]
    assert report["checked"][0]["cut_points"] == {"all": every, "total": every, "checked": every}
