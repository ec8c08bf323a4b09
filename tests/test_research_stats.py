"""Issue 21's research figures against independent plain references
(tests/support/research_reference.py, written from the issue's formulas, not from the job's code):

- `psr` and `dsr`: the reference itself against exact arithmetic and a brute-force Φ; the job's
  functions on synthetic returns with known moments (normal, skewed, fat-tailed); a CLI grid on
  real candles: every row's and the chosen one's `psr` from its equity file, `dsr` and `grid.sr0`
  from the sweep's Sharpes and `grid.combinations`, with a hold-out and a walk-forward too;
- trade statistics and the trades file: long/flat runs of every built-in (real and synthetic
  candles) rebuilt from the equity file alone; with sides, stops, size, slippage and borrow,
  the plain cash-and-units loop's trades (tests/support/execution_reference.py);
- the pooled walk-forward efficiency and its median from the result's folds, and a fold with a
  tiny positive in-sample cagr that blows up the old mean of per-fold ratios;
- `selection` and `next` for one combination, a grid, a hold-out and a walk-forward.
"""

from __future__ import annotations

import json
import math
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backtest.data.candles import read_candle_file
from backtest.data.storage import resolve
from backtest.data.synthetic import synthetic_candles
from backtest.params import parse_time_ms
from backtest.simulation.metrics import (
    TradeCounts,
    compute_metrics_block,
    deflated_sharpe,
    expected_max_sharpe,
    probabilistic_sharpe,
    return_moments,
)
from backtest.strategy import get
from tests.support import REPO, T0, backtest_process, make_candles, run_json
from tests.support import research_reference as ref
from tests.support.execution_reference import desired_of, reference

SHARED = REPO.parent / "shared" / "data" / "binance-spot-1h"
BTC = SHARED / "binance_spot_BTCUSDT_1h_misrori.csv"
BUILTINS = ("sma_trend", "sma_cross", "ema_trend", "momentum", "donchian_breakout", "rsi_reversion")
TRADE_COLUMNS = ["sample", "entry_time", "exit_time", "side", "return", "bars", "exit_kind"]
FEE = 0.001


def close(got, want, tol: float = 1e-9) -> bool:
    """Both null, or both numbers within tol (absolute and relative)."""
    if got is None or want is None:
        return got is None and want is None
    return math.isclose(got, want, rel_tol=tol, abs_tol=tol)


def assert_close(got, want, tol: float = 1e-9, what: str = "") -> None:
    assert close(got, want, tol), f"{what}: got {got!r}, want {want!r}"


# -- candle files -----------------------------------------------------------------------------


REAL_PERIODS = {"bear": (6000, 10000), "bull": (15000, 19000)}  # 4,000 real hours: mid 2022, 2023 H1


@pytest.fixture(scope="module")
def candle_files(tmp_path_factory):
    """Candle files by name, each written once per module: a real period (bars [start, stop) of
    the real BTCUSDT file; skips when ../shared is absent) or "synthetic" (five months)."""
    folder, made = tmp_path_factory.mktemp("research-candles"), {}

    def path_of(name: str) -> str:
        if name not in made:
            if name == "synthetic":
                candles = synthetic_candles("ETHUSDT", parse_time_ms("2024-01-01"), parse_time_ms("2024-06-01"))
            else:
                if not BTC.is_file():
                    pytest.skip(f"real Binance data not present at {SHARED}")
                candles = read_candle_file(resolve(str(BTC))).slice(*REAL_PERIODS[name])
            pq.write_table(candles.to_table(), folder / f"{name}.parquet")
            made[name] = str(folder / f"{name}.parquet")
        return made[name]

    return path_of


@pytest.fixture(params=sorted(REAL_PERIODS))
def real_file(request, candle_files) -> str:
    return candle_files(request.param)


@pytest.fixture(params=["bear", "synthetic"])
def candle_file(request, candle_files) -> str:
    return candle_files(request.param)


# -- reading the result files -----------------------------------------------------------------


def ms(column) -> list[int | None]:
    return column.cast(pa.int64()).to_pylist()


def equity_file(folder: Path, symbol: str, name: str = "equity") -> dict[str, list]:
    table = pq.read_table(folder / f"{symbol}.{name}.parquet")
    out = {"open_time": ms(table.column("open_time"))}
    out |= {c: table.column(c).to_pylist() for c in table.column_names if c != "open_time"}
    return out


def trades_file(folder: Path, symbol: str) -> list[dict]:
    table = pq.read_table(folder / f"{symbol}.trades.parquet")
    assert table.column_names == TRADE_COLUMNS
    schema = table.schema
    assert schema.field("entry_time").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("exit_time").type == pa.timestamp("ms", tz="UTC")
    assert (schema.field("side").type, schema.field("return").type, schema.field("bars").type) == (
        pa.int8(),
        pa.float64(),
        pa.int32(),
    )
    assert schema.field("sample").type == pa.string() and schema.field("exit_kind").type == pa.string()
    rows = table.to_pylist()
    for row, entry, exit_ in zip(rows, ms(table.column("entry_time")), ms(table.column("exit_time")), strict=True):
        row["entry_time"], row["exit_time"] = entry, exit_
    return rows


def expected_rows(sample: str, trades: list[dict], open_time: list[int]) -> list[dict]:
    """The trades file's rows of `trades` (trades_from_equity's or the plain loop's)."""
    return [
        {
            "sample": sample,
            "entry_time": open_time[t["entry"]],
            "exit_time": None if t["exit"] is None else open_time[t["exit"]],
            "side": t["side"],
            "return": t["return"],
            "bars": t["bars"],
            "exit_kind": t.get("kind", None if t["exit"] is None else "signal"),
        }
        for t in trades
    ]


def assert_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want), (len(got), len(want))
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert {k: v for k, v in g.items() if k != "return"} == {k: v for k, v in w.items() if k != "return"}, i
        assert_close(g["return"], w["return"], what=f"trade {i} return")


def assert_stats(got: dict, want: dict) -> None:
    assert set(got) == set(ref.TRADE_STAT_KEYS), sorted(got)
    for key in ref.TRADE_STAT_KEYS:
        assert_close(got[key], want[key], what=key)
        if key in ("max_trade_bars", "max_consecutive_losses") and want[key] is not None:
            assert got[key] == want[key] and isinstance(got[key], int), key


def stats_of(trades: list[dict]) -> dict:
    return ref.trade_stats([(t["return"], t["bars"]) for t in trades])


def run_to(capsys, folder: Path, *args: str) -> dict:
    code, (result,) = run_json(capsys, *args, "--results-url", str(folder))
    assert code == 0, result
    return result


# -- the reference itself ---------------------------------------------------------------------


def brute_phi(z: float, steps: int = 4000) -> float:
    """Φ(z) = 1/2 + ∫_0^z φ, by Simpson's rule."""
    h = z / steps
    total = 0.0
    for i in range(steps + 1):
        weight = 1 if i in (0, steps) else 4 if i % 2 else 2
        total += weight * math.exp(-((i * h) ** 2) / 2)
    return 0.5 + total * h / 3 / math.sqrt(2 * math.pi)


def brute_inverse_phi(p: float) -> float:
    lo, hi = -12.0, 12.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * math.erfc(-mid / math.sqrt(2)) < p else (lo, mid)
    return (lo + hi) / 2


def test_the_reference_psr_is_the_formula_in_exact_arithmetic():
    rng = np.random.default_rng(1)
    returns = (rng.standard_t(5, 60) * 0.01 + 0.002).tolist()
    exact = [Fraction(x) for x in returns]
    n = len(exact)
    mean = sum(exact) / n
    m2, m3, m4 = (sum((x - mean) ** k for x in exact) / n for k in (2, 3, 4))
    variance = sum((x - mean) ** 2 for x in exact) / (n - 1)
    m = ref.moments(returns)
    assert m["T"] == n and math.isclose(m["mean"], float(mean), rel_tol=1e-15)
    assert math.isclose(m["std"], math.sqrt(float(variance)), rel_tol=1e-15)
    assert math.isclose(m["kurt"], float(m4 / m2**2), rel_tol=1e-14)
    assert math.isclose(m["skew"], float(m3) / float(m2) ** 1.5, rel_tol=1e-14)
    s = float(mean) / math.sqrt(float(variance))
    z = s * math.sqrt(n - 1) / math.sqrt(1 - float(m3) / float(m2) ** 1.5 * s + (float(m4 / m2**2) - 1) / 4 * s * s)
    assert math.isclose(ref.psr(returns), brute_phi(z), rel_tol=0, abs_tol=1e-13)
    assert (ref.psr(returns) > 0.5) == (mean > 0) and 0 < ref.psr(returns) < 1
    assert ref.psr([-x for x in returns]) == pytest.approx(1 - ref.psr(returns), abs=1e-13)  # S and γ3 flip
    # SR₀'s quantiles, and SR₀ of N = 2 known Sharpes: √V·γ·Φ⁻¹(1 − 1/(2e)) since Φ⁻¹(1/2) = 0
    for p in (0.5, 0.9, 0.99, 1 - 1 / 539, 1 - 1 / (539 * math.e)):
        assert ref._PHI.inv_cdf(p) == pytest.approx(brute_inverse_phi(p), abs=1e-9)
    v = (0.03 - 0.01) ** 2 / 2
    assert ref.sr0([0.01, 0.03], 2) == pytest.approx(
        math.sqrt(v) * ref.EULER_GAMMA * brute_inverse_phi(1 - 1 / (2 * math.e))
    )
    assert ref.sr0([0.01, None, 0.03], 3) > ref.sr0([0.01, 0.03], 2)  # more tries, a higher bar


def test_the_reference_nulls():
    assert ref.psr([]) is None and ref.psr([0.01]) is None and ref.psr([0.01, 0.01, 0.01]) is None
    assert ref.psr_of_moments(1.0, 100, 3.0, 2.0) is None  # 1 - 3 + 1/4 < 0
    assert ref.psr_of_moments(0.1, 1, 0.0, 3.0) is None
    assert ref.sr0([0.1], 5) is None and ref.sr0([None, None, 0.2], 3) is None
    assert ref.trade_stats([]) == dict.fromkeys(ref.TRADE_STAT_KEYS)
    assert ref.trade_stats([(None, 7)]) == dict.fromkeys(ref.TRADE_STAT_KEYS)  # open only
    stats = ref.trade_stats([(0.1, 3), (None, 9)])
    assert stats["sqn"] is None and stats["avg_loss"] is None and stats["profit_factor"] is None
    assert stats["max_consecutive_losses"] == 0 and stats["max_trade_bars"] == 3  # the open trade left out
    stats = ref.trade_stats([(-0.1, 1), (-0.2, 2), (0.0, 1), (-0.1, 5), (0.3, 2), (-0.1, 1), (-0.1, 1), (-0.1, 1)])
    assert stats["max_consecutive_losses"] == 3 and stats["avg_win"] == 0.3
    assert stats["profit_factor"] == pytest.approx(0.3 / 0.7)
    assert stats["avg_loss"] == pytest.approx(-0.7 / 6) and stats["max_trade_bars"] == 5
    assert ref.trade_stats([(-0.1, 1), (-0.1, 2)])["sqn"] is None  # no spread


def test_trades_rebuilt_from_an_equity_curve():
    equity = [1.0, 0.99, 1.1, 1.05, 1.05, 1.05, 0.9, 0.95]  # long over bars 1-3 and 6-7 (open at the end)
    position = [0, 1, 1, 1, 0, 0, 1, 1]
    trades = ref.trades_from_equity(equity, position)
    assert trades == [
        {"entry": 1, "exit": 4, "side": 1, "return": pytest.approx(0.05), "bars": 3},
        {"entry": 6, "exit": None, "side": 1, "return": None, "bars": 2},
    ]
    # as two walk-forward folds: the trade open at the first fold's last bar stays open
    assert ref.trades_from_equity(equity, position, [0, 0, 0, 0, 0, 1, 1, 1]) == trades
    folded = ref.trades_from_equity(equity, [0, 1, 1, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1])
    assert folded[0] == {"entry": 1, "exit": None, "side": 1, "return": None, "bars": 2}  # marked, never sold
    with pytest.raises(ValueError, match="reverses"):
        ref.trades_from_equity(equity, [0, 1, 1, -1, 0, 0, 0, 0])


# -- psr and dsr: the job's functions on synthetic returns with known moments ----------------

T_BIG = 20_000
GENERATED = {
    # name: (draw(rng, T), mean, std, skewness, kurtosis, 5 standard errors of skewness, kurtosis)
    "normal": (lambda rng, t: rng.normal(0.0, 0.01, t), 0.0, 0.01, 0.0, 3.0, 0.08, 0.18),
    "gamma": (lambda rng, t: 0.005 * (rng.gamma(4.0, 1.0, t) - 4.0), 0.0, 0.01, 1.0, 4.5, 0.15, 0.9),
    "student_t": (lambda rng, t: 0.01 * rng.standard_t(10, t) / math.sqrt(10 / 8), 0.0, 0.01, 0.0, 4.0, 0.17, 0.85),
}


def counts_of_none(k: int) -> TradeCounts:
    zeros = np.zeros(k, dtype=np.int64)
    return TradeCounts(zeros, zeros, zeros, zeros, zeros, np.zeros((k, 4), dtype=np.int64))


def job_psr(equity: np.ndarray) -> float | None:
    block = equity[np.newaxis]
    (row,) = compute_metrics_block(block, np.zeros(block.shape, np.int8), equity, 0, counts_of_none(1))
    return row["psr"]


@pytest.mark.parametrize("name", sorted(GENERATED))
@pytest.mark.parametrize("z", [-0.7, 0.0, 1.3, 3.0])
def test_psr_on_generated_returns_with_known_moments(name, z):
    draw, mean, std, skew, kurt, skew_tol, kurt_tol = GENERATED[name]
    rng = np.random.default_rng(zlib.crc32(f"{name} {z}".encode()))
    drift = z * std / math.sqrt(T_BIG)  # a Sharpe near z/√T: psr away from 0 and 1
    returns = draw(rng, T_BIG) + drift
    m = ref.moments(returns.tolist())
    assert abs(m["mean"] - mean - drift) < 5 * std / math.sqrt(T_BIG)
    assert abs(m["std"] / std - 1) < 0.03
    assert abs(m["skew"] - skew) < skew_tol and abs(m["kurt"] - kurt) < kurt_tol, (m["skew"], m["kurt"])
    equity = np.concatenate(([1.0], np.cumprod(1 + returns)))
    r = ref.bar_returns(equity.tolist())
    want = ref.psr(r)
    assert 1e-4 < want < 1 - 1e-4
    assert_close(job_psr(equity), want, 1e-12, "psr of compute_metrics_block")
    mine = ref.moments(r)
    assert_close(probabilistic_sharpe(mine["S"], mine["T"], mine["skew"], mine["kurt"]), want, 1e-12, "psr")
    sharpe, count, job_skew, job_kurt = return_moments(equity)
    assert count == mine["T"] == T_BIG
    for got, wanted in ((sharpe, mine["S"]), (job_skew, mine["skew"]), (job_kurt, mine["kurt"])):
        assert math.isclose(got, wanted, rel_tol=1e-10, abs_tol=1e-13)
    # against a benchmark SR₀ (dsr's numerator)
    for sr0 in (0.5 / math.sqrt(T_BIG), -1e-3, 0.01):
        want = ref.psr_of_moments(mine["S"], mine["T"], mine["skew"], mine["kurt"], sr0)
        assert_close(
            probabilistic_sharpe(mine["S"], mine["T"], mine["skew"], mine["kurt"], sr0), want, 1e-12, "psr(SR0)"
        )


def test_psr_nulls_in_the_job():
    assert job_psr(np.array([1.0, 1.01])) is None  # T = 1
    assert job_psr(np.array([1.0, 1.0, 1.0, 1.0])) is None  # no variance
    assert job_psr(np.array([1.0, 1.01, 1.0, 1.02])) is not None
    assert probabilistic_sharpe(1.0, 100, 3.0, 2.0) is None  # radicand 1 - 3 + 1/4 < 0
    assert probabilistic_sharpe(0.5, 100, 2.0, 1.0) is None  # radicand 0
    assert probabilistic_sharpe(0.1, 1, 0.0, 3.0) is None


def test_dsr_against_the_reference_on_generated_trials():
    rng = np.random.default_rng(21)
    curves = []
    for i in range(40):
        returns = 0.01 * rng.standard_t(6, 3000) + (i - 20) * 2e-5
        curves.append(np.concatenate(([1.0], np.cumprod(1 + returns))))
    flat = np.ones(3001)
    sharpes = [
        None if (m := ref.moments(ref.bar_returns(c.tolist()))) is None else m["S"] * math.sqrt(8760) for c in curves
    ]
    sharpes += [None, None]  # two combinations whose Sharpe is undefined (flat curves): in N, not in V
    assert ref.moments(ref.bar_returns(flat.tolist())) is None
    trials = len(sharpes)
    best = int(np.argmax([s for s in sharpes if s is not None]))
    want_dsr, want_sr0 = ref.dsr(ref.bar_returns(curves[best].tolist()), sharpes, trials)
    got_dsr, got_sr0 = deflated_sharpe(curves[best], sharpes, trials)
    assert want_sr0 > 0 and 0 < want_dsr < ref.psr_of_equity(curves[best].tolist())
    assert_close(got_sr0, want_sr0, 1e-12, "sr0")
    assert_close(got_dsr, want_dsr, 1e-12, "dsr")
    per_bar = [None if s is None else s / math.sqrt(8760) for s in sharpes]
    assert_close(expected_max_sharpe(per_bar, trials), ref.sr0(per_bar, trials), 1e-12, "expected_max_sharpe")
    assert_close(expected_max_sharpe(per_bar, 539), ref.sr0(per_bar, 539), 1e-12, "expected_max_sharpe N=539")
    # undefined: fewer than two defined Sharpes; a chosen curve without variance
    assert expected_max_sharpe([0.01, None], 2) is None
    assert deflated_sharpe(curves[0], [1.0, None, None], 3) == (None, None)
    dsr, sr0 = deflated_sharpe(flat, sharpes, trials)
    assert dsr is None and close(sr0, want_sr0, 1e-12)


def test_a_grid_without_defined_sharpes_has_null_dsr(capsys, tmp_path):
    """Constant prices: no combination trades, no Sharpe is defined (V needs two): psr, dsr and
    sr0 null, trade statistics null, an empty trades file with its columns."""
    path = tmp_path / "flat.parquet"
    pq.write_table(make_candles([100.0] * 300, [100.0] * 300).to_table(), path)
    result = run_to(capsys, tmp_path / "flat", "--symbol", "FLATUSDT", "--input", str(path), "--strategy", "sma_cross",
                    "--param", "fast=2,3", "--param", "slow=10")  # fmt: skip
    assert result["selection"] == "in_sample_best" and result["grid"]["trials"] == 2
    assert [(row["sharpe"], row["psr"]) for row in result["sweep"]] == [(None, None), (None, None)]
    assert result["psr"] is None and result["dsr"] is None and result["grid"]["sr0"] is None
    assert result["trade_stats"] == dict.fromkeys(ref.TRADE_STAT_KEYS)
    assert trades_file(tmp_path / "flat", "FLATUSDT") == []


# -- psr and dsr end to end: a CLI grid on real candles ---------------------------------------

GRID = ["--strategy", "sma_cross", "--param", "fast=6h,1d,2d", "--param", "slow=1d,2d,4d"]  # 3 of 9 rejected


def single_run_psr(capsys, tmp_path: Path, source: list[str], row: dict) -> float | None:
    """The row's combination alone, with its equity file: the reference psr of that curve."""
    folder = tmp_path / f"single-{row['params']['fast_bars']}-{row['params']['slow_bars']}"
    args = ["--param", f"fast={row['params']['fast_bars']}", "--param", f"slow={row['params']['slow_bars']}"]
    result = run_to(capsys, folder, *source, "--strategy", "sma_cross", *args)
    assert result["selection"] == "none" and result["dsr"] is None
    equity = equity_file(folder, "BTCUSDT")["equity"]
    want = ref.psr_of_equity(equity)
    assert_close(result["psr"], want, what="single run psr")
    return want


def test_psr_and_dsr_of_a_real_grid_from_its_files(capsys, tmp_path, real_file):
    folder = tmp_path / "grid"
    source = ["--symbol", "BTCUSDT", "--input", real_file]
    proc = backtest_process("run", *source, *GRID, "--select-by", "sharpe", "--results-url", str(folder))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == json.loads((folder / "BTCUSDT.json").read_text())
    grid, rows = result["grid"], result["sweep"]
    assert grid["combinations"] == grid["trials"] == len(rows) == 6 and grid["skipped"] == 3
    assert result["selection"] == "in_sample_best"
    equity = equity_file(folder, "BTCUSDT")["equity"]
    assert len(equity) == 4000
    returns = ref.bar_returns(equity)
    assert_close(result["psr"], ref.psr(returns), what="psr of the chosen curve")
    want_dsr, want_sr0 = ref.dsr(returns, [row["sharpe"] for row in rows], grid["combinations"])
    assert want_dsr is not None and want_sr0 > 0
    assert_close(result["dsr"], want_dsr, what="dsr")
    assert_close(grid["sr0"], want_sr0, what="sr0")
    assert result["dsr"] < result["psr"]
    # every row's psr is its own curve's
    for row in rows:
        assert_close(row["psr"], single_run_psr(capsys, tmp_path, source, row), what=f"row {row['params']}")
    assert result["next"] == {"params": result["best"], "execution": result["execution"]}


def test_psr_and_dsr_with_a_holdout_and_a_walk_forward(capsys, tmp_path, real_file):
    source = ["--symbol", "BTCUSDT", "--input", real_file]
    held = run_to(capsys, tmp_path / "holdout", *source, *GRID, "--holdout-days", "40")
    assert held["selection"] == "holdout"
    in_sample = equity_file(tmp_path / "holdout", "BTCUSDT")["equity"]
    oos = equity_file(tmp_path / "holdout", "BTCUSDT", "oos.equity")
    assert len(in_sample) + len(oos["equity"]) == 4000 and oos["equity"][0] == 1.0 and oos["position"][0] == 0
    assert_close(held["psr"], ref.psr_of_equity(in_sample), what="in-sample psr")
    assert_close(held["oos"]["psr"], ref.psr_of_equity(oos["equity"]), what="oos psr")
    want_dsr, want_sr0 = ref.dsr(ref.bar_returns(in_sample), [r["sharpe"] for r in held["sweep"]], 6)
    assert_close(held["dsr"], want_dsr, what="holdout dsr (in sample)")
    assert_close(held["grid"]["sr0"], want_sr0, what="holdout sr0")
    assert all("psr" in row and "psr" in row["oos"] for row in held["sweep"])

    plain = run_to(capsys, tmp_path / "plain", *source, *GRID)
    walked = run_to(capsys, tmp_path / "walk", *source, *GRID, "--walk-forward", "60d:20d")
    assert walked["selection"] == "walk_forward"
    # dsr is the whole window's grid best's, as the plain grid's (checked from its files above)
    assert walked["dsr"] == plain["dsr"] and walked["grid"]["sr0"] == plain["grid"]["sr0"]
    assert_close(plain["dsr"], ref.dsr(ref.bar_returns(equity_file(tmp_path / "plain", "BTCUSDT")["equity"]),
                                       [r["sharpe"] for r in plain["sweep"]], 6)[0], what="plain dsr")  # fmt: skip
    stitched = equity_file(tmp_path / "walk", "BTCUSDT")
    assert_close(walked["oos"]["psr"], ref.psr_of_equity(stitched["equity"]), what="stitched psr")
    assert walked["walk_forward"]["stitched"]["psr"] == walked["oos"]["psr"]
    for k, fold in enumerate(walked["walk_forward"]["folds"]):
        assert "psr" in fold["in_sample"]
        part = [e for e, f in zip(stitched["equity"], stitched["fold"], strict=True) if f == k]
        assert_close(fold["out_of_sample"]["psr"], ref.psr_of_equity(part), what=f"fold {k} psr")


# -- trade statistics and the trades file -----------------------------------------------------


@pytest.mark.parametrize("name", BUILTINS)
def test_long_flat_trades_and_stats_from_the_equity_file(capsys, tmp_path, candle_file, name):
    result = run_to(capsys, tmp_path, "--symbol", "BTCUSDT", "--input", candle_file, "--strategy", name)
    curve = equity_file(tmp_path, "BTCUSDT")
    trades = ref.trades_from_equity(curve["equity"], curve["position"])
    assert sum(t["exit"] is not None for t in trades) >= 5, name  # enough closed trades to mean something
    assert result["trades"] == len(trades)
    assert_rows(trades_file(tmp_path, "BTCUSDT"), expected_rows("in_sample", trades, curve["open_time"]))
    assert_stats(result["trade_stats"], stats_of(trades))


def test_trades_of_a_grid_with_a_holdout(capsys, tmp_path, real_file):
    result = run_to(capsys, tmp_path, "--symbol", "BTCUSDT", "--input", real_file, *GRID, "--holdout-days", "60")
    curve, oos = equity_file(tmp_path, "BTCUSDT"), equity_file(tmp_path, "BTCUSDT", "oos.equity")
    in_trades = ref.trades_from_equity(curve["equity"], curve["position"])
    oos_trades = ref.trades_from_equity(oos["equity"], oos["position"])
    assert in_trades and oos_trades
    want = expected_rows("in_sample", in_trades, curve["open_time"])
    want += expected_rows("out_of_sample", oos_trades, oos["open_time"])
    assert_rows(trades_file(tmp_path, "BTCUSDT"), want)
    assert_stats(result["trade_stats"], stats_of(in_trades))
    assert_stats(result["oos"]["trade_stats"], stats_of(oos_trades))


def test_trades_of_a_walk_forward_are_the_stitched_ones(capsys, tmp_path, real_file):
    source = ["--symbol", "BTCUSDT", "--input", real_file]
    result = run_to(capsys, tmp_path / "walk", *source, *GRID, "--walk-forward", "45d:15d")
    plain = run_to(capsys, tmp_path / "plain", *source, *GRID)
    stitched = equity_file(tmp_path / "walk", "BTCUSDT")
    trades = ref.trades_from_equity(stitched["equity"], stitched["position"], stitched["fold"])
    assert len(trades) >= 5
    assert any(t["exit"] is None for t in trades[:-1])  # a trade open at a fold's end: open, not sold
    assert_rows(
        trades_file(tmp_path / "walk", "BTCUSDT"), expected_rows("out_of_sample", trades, stitched["open_time"])
    )
    assert_stats(result["oos"]["trade_stats"], stats_of(trades))
    assert result["walk_forward"]["stitched"]["trade_stats"] == result["oos"]["trade_stats"]
    assert result["trade_stats"] == plain["trade_stats"]  # the top level: the whole window's grid best
    assert result["oos"]["trades"] == len(trades)


EXECUTIONS = [
    ("long_short", {}),
    ("short", {"sl": 0.03, "tp": 0.08}),
    ("long", {"sl": 0.02, "tp": 0.05, "slippage_bps": 5.0}),
    ("long_short", {"trail": 0.04, "size": 0.5, "slippage_bps": 5.0, "borrow_bps_per_day": 20.0}),
]
FLAGS = {"sl": "--sl", "tp": "--tp", "trail": "--trail", "size": "--size", "slippage_bps": "--slippage-bps",
         "borrow_bps_per_day": "--borrow-bps-per-day"}  # fmt: skip


@pytest.mark.parametrize("name", ["sma_cross", "donchian_breakout", "rsi_reversion"])
@pytest.mark.parametrize("direction, options", EXECUTIONS)
def test_trades_with_sides_and_stops_equal_the_plain_loop(capsys, tmp_path, real_file, name, direction, options):
    flags = [arg for key, value in options.items() for arg in (FLAGS[key], str(value))]
    result = run_to(capsys, tmp_path, "--symbol", "BTCUSDT", "--input", real_file, "--strategy", name,
                    "--direction", direction, *flags)  # fmt: skip
    candles = read_candle_file(resolve(real_file))
    strategy = get(name)
    targets = strategy.checked_signals(candles, [strategy.defaults()]).astype(np.int8)[0].tolist()
    loop = reference(candles.open, candles.high, candles.low, candles.close, desired_of(targets, direction), FEE,
                     **options)  # fmt: skip
    held = ref.bars_held(loop.trades, loop.position)
    trades = [
        {"entry": e, "exit": x, "side": s, "return": r, "kind": k, "bars": b}
        for (e, x, s, r, k), b in zip(loop.trades, held, strict=True)
    ]
    assert sum(t["exit"] is not None for t in trades) >= 5
    curve = equity_file(tmp_path, "BTCUSDT")
    assert curve["position"] == loop.position
    np.testing.assert_allclose(curve["equity"], loop.equity, rtol=1e-9)
    times = candles.open_time.tolist()
    assert_rows(trades_file(tmp_path, "BTCUSDT"), expected_rows("in_sample", trades, times))
    assert_stats(result["trade_stats"], stats_of(trades))
    assert_close(result["psr"], ref.psr_of_equity(loop.equity), what="psr")


def test_a_ruined_short_and_no_closed_trade(capsys, tmp_path):
    """A short through a 4x jump: one trade, closed by ruin at -1 (the plain loop's), equity 0 and
    R = 0 from there (psr); a long/flat run whose only trade is open at the end: every statistic null."""
    closes = [100.0 * 0.99**k for k in range(40)]
    closes += [closes[-1] * 4.0 * 1.01**k for k in range(10)]
    candles = make_candles([closes[0], *closes[:-1]], closes)
    path = tmp_path / "jump.parquet"
    pq.write_table(candles.to_table(), path)
    source = ["--symbol", "JUMPUSDT", "--input", str(path), "--strategy", "sma_cross", "--param", "fast=2"]
    result = run_to(capsys, tmp_path / "short", *source, "--param", "slow=10", "--direction", "short")
    strategy = get("sma_cross")
    combo = {**strategy.defaults(), "fast": 2, "slow": 10}
    targets = strategy.checked_signals(candles, [combo]).astype(np.int8)[0].tolist()
    loop = reference(candles.open, candles.high, candles.low, candles.close, desired_of(targets, "short"), FEE)
    assert [t[4] for t in loop.trades] == ["ruin"] and loop.trades[0][3] == -1.0 and loop.equity[-1] == 0.0
    held = ref.bars_held(loop.trades, loop.position)
    trades = [{"entry": e, "exit": x, "side": sd, "return": r, "kind": k, "bars": b}
              for (e, x, sd, r, k), b in zip(loop.trades, held, strict=True)]  # fmt: skip
    assert_rows(
        trades_file(tmp_path / "short", "JUMPUSDT"), expected_rows("in_sample", trades, candles.open_time.tolist())
    )
    assert_stats(result["trade_stats"], stats_of(trades))
    assert result["exits"]["ruin"] == 1 and result["trade_stats"]["worst_trade"] == -1.0
    curve = equity_file(tmp_path / "short", "JUMPUSDT")
    assert curve["equity"][-1] == 0.0
    assert_close(result["psr"], ref.psr_of_equity(curve["equity"]), what="psr after a ruin")

    rising = [100.0] * 30 + [100.0 * 1.05**k for k in range(1, 40)]
    pq.write_table(make_candles([rising[0], *rising[:-1]], rising).to_table(), path)
    long_only = run_to(capsys, tmp_path / "long", "--symbol", "UPUSDT", "--input", str(path), "--strategy",
                       "momentum", "--param", "lookback=2")  # fmt: skip
    curve = equity_file(tmp_path / "long", "UPUSDT")
    trades = ref.trades_from_equity(curve["equity"], curve["position"])
    assert [t["exit"] for t in trades] == [None]  # long from the rise to the end: open
    assert_rows(trades_file(tmp_path / "long", "UPUSDT"), expected_rows("in_sample", trades, curve["open_time"]))
    assert long_only["trade_stats"] == dict.fromkeys(ref.TRADE_STAT_KEYS) and long_only["trades"] == 1


# -- the walk-forward efficiency --------------------------------------------------------------


def check_efficiency(result: dict) -> dict:
    walk = result["walk_forward"]
    want = ref.walk_forward_efficiency(walk["folds"], result["oos"]["cagr"])
    assert_close(walk["efficiency"], want["efficiency"], 1e-12, "efficiency")
    assert_close(walk["in_sample_cagr"], want["in_sample_cagr"], 1e-12, "in_sample_cagr")
    assert_close(walk["efficiency_median"], want["efficiency_median"], 1e-12, "efficiency_median")
    assert walk["efficiency_folds"] == want["efficiency_folds"]
    for fold in walk["folds"]:
        ins, out = fold["in_sample"]["cagr"], fold["out_of_sample"]["cagr"]
        assert_close(fold["efficiency"], out / ins if ins is not None and ins > 0 and out is not None else None,
                     1e-12, "fold efficiency")  # fmt: skip
    assert result["oos"]["cagr"] == walk["stitched"]["cagr"]
    return want


@pytest.mark.parametrize("spec", ["45d:15d", "60d:20d:anchored"])
def test_pooled_efficiency_of_a_real_walk_forward(capsys, tmp_path, real_file, spec):
    result = run_to(capsys, tmp_path, "--symbol", "BTCUSDT", "--input", real_file, *GRID, "--walk-forward", spec)
    want = check_efficiency(result)
    assert len(result["walk_forward"]["folds"]) >= 4
    if want["efficiency_folds"] >= 2:  # (in the bear period the anchored choices all lose in sample)
        assert want["efficiency"] is not None and want["old_mean_efficiency"] is not None
    # the stitched cagr is the stitched curve's
    stitched = equity_file(tmp_path, "BTCUSDT")["equity"]
    assert_close(result["oos"]["cagr"], stitched[-1] ** (8760 / len(stitched)) - 1, 1e-12, "stitched cagr")


ALWAYS_LONG = '''
import numpy as np
from backtest.strategy import Param, strategy


@strategy("always_long", params=[Param("copy", 1, low=1, high=2)], warmup=lambda p: 0)
def always_long(candles, copy):
    """long on every bar"""
    return np.ones(len(candles), dtype=bool)
'''


def test_a_tiny_positive_in_sample_cagr_does_not_blow_up_the_pooled_efficiency(capsys, tmp_path, strategy_folder):
    """Six 5-day blocks, always long, no fee: fold k trains on block k and tests on block k+1. Block
    1 barely rises (+1e-7), block 2 rises 5%: fold 1's ratio is about 5e6, the old mean of per-fold
    ratios explodes; the pooled ratio is an annualised figure over an average of five."""
    (strategy_folder / "always_long.py").write_text(ALWAYS_LONG)
    block = 120
    closes, price = [], 100.0
    for r in (0.02, 1e-7, 0.05, 0.01, 0.03, 0.02):
        closes += [price * (1 + r) ** ((t + 1) / block) for t in range(block)]
        price = closes[-1]
    path = tmp_path / "steps.parquet"
    pq.write_table(make_candles([100.0, *closes[:-1]], closes, start_ms=T0).to_table(), path)
    result = run_to(capsys, tmp_path / "walk", "--symbol", "STEPUSDT", "--input", str(path), "--strategy",
                    "always_long", "--fee-bps", "0", "--walk-forward", "5d:5d")  # fmt: skip
    folds = result["walk_forward"]["folds"]
    assert len(folds) == 5 and 0 < folds[1]["in_sample"]["cagr"] < 1e-4
    want = check_efficiency(result)
    assert want["efficiency_folds"] == 5 and want["old_mean_efficiency"] > 1e5  # the old rule: ~1e6
    assert max(want["ratios"]) == pytest.approx(folds[1]["efficiency"]) and folds[1]["efficiency"] > 1e6
    assert 0 < result["walk_forward"]["efficiency"] < 2  # pooled: a sane figure
    assert 0 < result["walk_forward"]["efficiency_median"] < 10
    assert result["selection"] == "walk_forward" and result["dsr"] is None  # one combination


# -- selection and next -----------------------------------------------------------------------


def test_selection_and_next(capsys, tmp_path, store):
    source = ["--symbol", "BTCUSDT", "--data-url", store, "--strategy", "sma_cross"]
    grid = ["--param", "fast=6h,12h", "--param", "slow=2d,4d"]

    def run(*args: str) -> dict:
        code, (result,) = run_json(capsys, *source, *args)
        assert code == 0
        return result

    def plain_params(result: dict) -> dict:
        return {k: v for k, v in result["params"].items() if k != "fee_bps"}

    one = run()
    assert one["selection"] == "none" and one["dsr"] is None and "grid" not in one
    assert one["next"] == {"params": plain_params(one), "execution": one["execution"]}

    several = run(*grid)
    assert several["selection"] == "in_sample_best" and several["grid"]["trials"] == 4
    assert several["next"] == {"params": several["best"], "execution": several["execution"]}
    assert several["next"]["params"] == plain_params(several)

    stops = run("--sl", "3%,6%")  # one strategy combination, two stop levels: a grid of 2
    assert stops["selection"] == "in_sample_best" and stops["grid"]["trials"] == 2
    assert stops["next"]["execution"] == stops["execution"] and stops["execution"]["sl"] in (0.03, 0.06)

    held = run(*grid, "--holdout-days", "20")
    assert held["selection"] == "holdout" and "split" in held
    assert held["next"] == {"params": held["best"], "execution": held["execution"]}

    walked = run(*grid, "--walk-forward", "30d:10d")
    walk = walked["walk_forward"]
    last = walk["folds"][-1]
    assert walked["selection"] == "walk_forward"
    assert walked["next"] == walk["next"] == {"params": last["params"], "execution": last["execution"]}
    assert walked["best"] == several["best"]  # the top level stays the whole window's hindsight best
    # the folds' choices differ from the whole window's somewhere, so `next` is not `best` by accident
    assert any(fold["params"] != walked["best"] for fold in walk["folds"])
