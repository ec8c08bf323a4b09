"""Issue 21's research figures against independent plain-loop references
(tests/support/research_reference_second.py, the second author's), written from the issue's
formulas: `psr` on synthetic returns with known moments (normal, skewed, fat-tailed) and on real
grids, `dsr` and `grid.sr0` from a grid's sweep rows, trade statistics and the trades file from a
plain loop over the equity file, the pooled walk-forward efficiency, `selection`, `next` and the
hold-out's OOS curve."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from backtest.data.candles import read_candle_file
from backtest.data.storage import resolve
from backtest.data.synthetic import EPOCH_MS, synthetic_candles
from backtest.params import HOUR_MS, format_time_ms, parse_time_ms
from backtest.simulation.execution import EXIT_KINDS
from backtest.simulation.metrics import TradeCounts, compute_metrics_block
from tests.support import make_candles, run_json
from tests.support import research_reference_second as ref
from tests.support.execution_reference import desired_of, reference

BTC = "binance_spot_BTCUSDT_1h_misrori.csv"
BUILTINS = ["sma_trend", "sma_cross", "ema_trend", "momentum", "donchian_breakout", "rsi_reversion"]
TRADE_COLUMNS = ["entry_time", "exit_time", "side", "return", "bars", "exit_kind"]


def close_to(got, want, tol: float = 1e-9) -> bool:
    if got is None or want is None:
        return got is None and want is None
    return math.isclose(got, want, rel_tol=tol, abs_tol=tol)


def assert_stats(got: dict, want: dict, tol: float = 1e-9) -> None:
    assert set(got) == set(want), set(got) ^ set(want)
    for name, value in want.items():
        assert close_to(got[name], value, tol), (name, got[name], value)


def read_rows(path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def assert_trade_rows(rows: list[dict], want: list[dict]) -> None:
    assert len(rows) == len(want)
    for got, w in zip(rows, want, strict=True):
        assert {k: got[k] for k in TRADE_COLUMNS if k != "return"} == {k: w[k] for k in TRADE_COLUMNS if k != "return"}
        assert close_to(got["return"], w["return"], 1e-9), (got, w)


# -- psr on synthetic returns with known moments -----------------------------------------------------

T = 20_000


def designed_returns() -> dict[str, tuple[np.ndarray, float, float]]:
    """Returns (mean 0.01 std, std 0.01) with the skewness and kurtosis (not excess) designed; each
    draw is standardised to its own sample mean and std, so the Sharpe is as designed too."""
    rng = np.random.default_rng(21)
    sigma, mu = 0.01, 0.0001
    shape = 4.0  # gamma(4): skewness 2/sqrt(4) = 1, kurtosis 3 + 6/4 = 4.5
    gamma = (rng.gamma(shape, 1.0, T) - shape) / math.sqrt(shape)
    nu = 10.0  # Student t(10): skewness 0, kurtosis 3 + 6/(nu-4) = 4
    student = rng.standard_t(nu, T) / math.sqrt(nu / (nu - 2))
    normal = rng.standard_normal(T)

    def scaled(x: np.ndarray) -> np.ndarray:
        return mu + sigma * (x - x.mean()) / x.std()

    return {
        "normal": (scaled(normal), 0.0, 3.0),
        "right_skewed": (scaled(gamma), 1.0, 4.5),
        "left_skewed": (scaled(-gamma), -1.0, 4.5),
        "fat_tailed": (scaled(student), 0.0, 4.0),
    }


def zero_counts(k: int, ruins: int = 0) -> TradeCounts:
    """No trades; with `ruins`, one ruin exit each (the engine logs a ruin as one: the metrics count
    R_t = 0 after E_{t-1} = 0 only for a ruined backtest)."""
    z = np.zeros(k, dtype=np.int64)
    exits = np.zeros((k, 4), dtype=np.int64)
    exits[:, EXIT_KINDS.index("ruin")] = ruins
    return TradeCounts(z, z, z, z, z, exits)


def metrics_of_curves(curves: list[np.ndarray], ruins: int = 0) -> list[dict]:
    equity = np.vstack(curves)
    position = np.zeros(equity.shape, dtype=np.int8)
    close = np.linspace(100.0, 110.0, equity.shape[1])
    return compute_metrics_block(equity, position, close, 0, zero_counts(len(curves), ruins))


def test_psr_on_synthetic_returns_with_known_moments():
    cases = designed_returns()
    curves = [np.concatenate(([1.0], np.cumprod(1 + r))) for r, _, _ in cases.values()]
    rows = metrics_of_curves(curves)
    for (name, (_, skew, kurt)), curve, row in zip(cases.items(), curves, rows, strict=True):
        m = ref.moments(ref.bar_returns(curve))
        assert m is not None and m[1] == T
        # the generated sample has the moments designed, within sampling error
        assert abs(m[2] - skew) < 0.12, (name, m[2])
        assert abs(m[3] - kurt) < 0.5, (name, m[3])
        want = ref.psr_of_equity(curve)
        assert 0.8 < want < 0.99, (name, want)  # neither saturated nor trivial
        assert row["psr"] == pytest.approx(want, abs=1e-12, rel=0), name
        # the moments matter: the normal-returns formula (g3 = 0, g4 = 3) gives another figure
        if name != "normal":
            assert abs(ref.psr_of_moments(m[0], m[1], 0.0, 3.0) - want) > 1e-6, name
    # Same Sharpe, positive skew helps, negative skew hurts (the sign of the g3 term).
    plain = ref.psr_of_moments(0.01, T, 0.0, 3.0)
    assert ref.psr_of_moments(0.01, T, 1.0, 4.5) > plain > ref.psr_of_moments(0.01, T, -1.0, 4.5)


def test_psr_is_null_where_undefined_and_counts_the_zeros_after_a_ruin():
    flat = np.ones(50)
    two = np.array([1.0, 1.01])
    ruined = np.concatenate(([1.0], np.cumprod(1 + np.linspace(-0.02, 0.03, 30)), [0.0] * 20))
    assert metrics_of_curves([flat])[0]["psr"] is None and ref.psr_of_equity(flat) is None
    assert metrics_of_curves([two])[0]["psr"] is None and ref.psr_of_equity(two) is None
    got = metrics_of_curves([ruined], ruins=1)[0]["psr"]
    want = ref.psr_of_equity(ruined)  # R = -1 at the ruin, then 0 for every later bar
    assert want is not None and got == pytest.approx(want, abs=1e-12)


# -- psr, dsr and sr0 from a CLI grid ------------------------------------------------------------


def check_grid(result: dict, results) -> None:
    """The chosen combination's psr from the equity file, dsr and sr0 from the sweep's Sharpes and
    N = grid.trials (the combinations evaluated)."""
    symbol = result["symbol"]
    rows = result["sweep"]
    grid = result["grid"]
    assert grid["trials"] == len(rows) == grid["combinations"]
    equity = pq.read_table(results / f"{symbol}.equity.parquet").column("equity").to_pylist()
    returns = ref.bar_returns(equity)
    assert close_to(result["psr"], ref.psr(returns), 1e-9)
    sharpes = [row["sharpe"] for row in rows]
    assert close_to(grid["sr0"], ref.sr0(sharpes, grid["trials"]), 1e-9)
    want_dsr = ref.dsr(returns, sharpes, grid["trials"])
    assert close_to(result["dsr"], want_dsr, 1e-9)
    assert want_dsr is not None and want_dsr < result["psr"]  # deflation only lowers it here
    for row in rows:
        assert row["psr"] is None or 0 <= row["psr"] <= 1


def test_dsr_and_psr_of_a_real_grid(capsys, shared_data, tmp_path):
    results = tmp_path / "results"
    window = ["--start", "2023-01-01", "--end", "2023-05-01"]
    code, (result,) = run_json(
        capsys, "--symbol", "BTCUSDT", "--input", str(shared_data / BTC), *window, "--strategy", "sma_cross",
        "--param", "fast=6h,12h,1d,2d", "--param", "slow=1d,2d,4d", "--select-by", "sharpe",
        "--results-url", str(results),
    )  # fmt: skip
    assert code == 0
    assert result["selection"] == "in_sample_best"
    assert result["grid"]["skipped"] > 0  # fast >= slow: not evaluated, not counted in N
    check_grid(result, results)
    best = max(result["sweep"], key=lambda row: row["sharpe"])
    assert result["sharpe"] == best["sharpe"] and result["psr"] == best["psr"]
    # every sweep row's psr: that combination run alone, its psr from its own equity file
    for i, row in enumerate(result["sweep"]):
        alone = tmp_path / f"alone{i}"
        params = [f"{name}={row['params'][name + '_bars']}" for name in ("fast", "slow")]
        code, (single,) = run_json(
            capsys, "--symbol", "BTCUSDT", "--input", str(shared_data / BTC), *window, "--strategy", "sma_cross",
            "--param", params[0], "--param", params[1], "--results-url", str(alone),
        )  # fmt: skip
        assert code == 0 and single["sharpe"] == row["sharpe"]
        equity = pq.read_table(alone / "BTCUSDT.equity.parquet").column("equity").to_pylist()
        assert close_to(row["psr"], ref.psr_of_equity(equity), 1e-9) and row["psr"] == single["psr"]


def test_dsr_and_psr_of_a_synthetic_grid_with_stops(capsys, store, tmp_path):
    results = tmp_path / "results"
    code, (result,) = run_json(
        capsys, "--symbol", "ETHUSDT", "--data-url", store, "--start", "2024-01-10", "--end", "2024-04-01",
        "--strategy", "sma_cross", "--param", "fast=6h,12h", "--param", "slow=2d,4d", "--sl", "3%,8%",
        "--results-url", str(results),
    )  # fmt: skip
    assert code == 0 and result["grid"]["trials"] == 8
    check_grid(result, results)


def test_one_combination_has_no_dsr(capsys, store, tmp_path):
    results = tmp_path / "results"
    code, (result,) = run_json(capsys, "--symbol", "BTCUSDT", "--data-url", store, "--strategy", "sma_cross",
                               "--results-url", str(results))  # fmt: skip
    assert code == 0
    assert result["selection"] == "none" and result["dsr"] is None
    equity = pq.read_table(results / "BTCUSDT.equity.parquet").column("equity").to_pylist()
    assert close_to(result["psr"], ref.psr_of_equity(equity), 1e-9)
    assert result["next"]["params"] == {k: v for k, v in result["params"].items() if k != "fee_bps"}
    assert result["next"]["execution"] == result["execution"]


# -- trade statistics and the trades file -----------------------------------------------------------


def check_trades(result: dict, results, equity_name: str, sample: str, stats: dict) -> list[dict]:
    """The trades file's rows of `sample` equal the trades rebuilt from the equity file; the
    statistics are those of their closed trades."""
    table = pq.read_table(results / equity_name)
    mine = ref.trades_from_equity(
        table.column("open_time").to_pylist(), table.column("equity").to_pylist(), table.column("position").to_pylist()
    )
    rows = [row for row in read_rows(results / f"{result['symbol']}.trades.parquet") if row["sample"] == sample]
    assert_trade_rows(rows, mine)
    assert_stats(stats, ref.trade_stats_of_trades(mine))
    return mine


def ends_open(trades: list[dict]) -> bool:
    return bool(trades) and trades[-1]["exit_time"] is None


@pytest.mark.parametrize("name", BUILTINS)
def test_trade_stats_on_real_candles(capsys, shared_data, tmp_path, name):
    results = tmp_path / "results"
    code, (result,) = run_json(capsys, "--symbol", "BTCUSDT", "--input", str(shared_data / BTC), "--start",
                               "2022-09-01", "--end", "2023-03-01", "--strategy", name, "--results-url",
                               str(results))  # fmt: skip
    assert code == 0
    trades = check_trades(result, results, "BTCUSDT.equity.parquet", "in_sample", result["trade_stats"])
    assert len(trades) == result["trades"] > 3
    assert ends_open(trades) == (result["final_position"] != "flat")
    closed = [t for t in trades if t["return"] is not None]
    assert sum(t["return"] > 0 for t in closed) / len(closed) == pytest.approx(result["win_rate"])


@pytest.fixture
def synthetic_file(tmp_path):
    path = tmp_path / "synthetic.parquet"
    candles = synthetic_candles("SOLUSDT", parse_time_ms("2024-01-01"), parse_time_ms("2024-07-01"))
    pq.write_table(candles.to_table(), path)
    return path


@pytest.mark.parametrize("name", BUILTINS)
def test_trade_stats_on_synthetic_candles(capsys, synthetic_file, tmp_path, name):
    results = tmp_path / "results"
    code, (result,) = run_json(capsys, "--symbol", "SOLUSDT", "--input", str(synthetic_file), "--start",
                               "2024-02-01", "--strategy", name, "--results-url", str(results))  # fmt: skip
    assert code == 0
    trades = check_trades(result, results, "SOLUSDT.equity.parquet", "in_sample", result["trade_stats"])
    assert len(trades) == result["trades"] > 3
    assert ends_open(trades) == (result["final_position"] != "flat")


def test_trade_stats_of_a_grid_choice_and_its_holdout(capsys, synthetic_file, tmp_path):
    """A hold-out: the in-sample trades (equity file) and the out-of-sample ones (OOS curve)."""
    results = tmp_path / "results"
    code, (result,) = run_json(
        capsys, "--symbol", "SOLUSDT", "--input", str(synthetic_file), "--start", "2024-02-01", "--strategy",
        "sma_cross", "--param", "fast=6h,12h,1d", "--param", "slow=2d,4d", "--holdout-days", "40",
        "--results-url", str(results),
    )  # fmt: skip
    assert code == 0 and result["selection"] == "holdout"
    check_trades(result, results, "SOLUSDT.equity.parquet", "in_sample", result["trade_stats"])
    check_trades(result, results, "SOLUSDT.oos.equity.parquet", "out_of_sample", result["oos"]["trade_stats"])
    oos = pq.read_table(results / "SOLUSDT.oos.equity.parquet")
    assert oos.column_names[:3] == ["open_time", "equity", "position"]
    equity = oos.column("equity").to_pylist()
    assert equity[0] == 1.0 and equity[-1] == pytest.approx(1 + result["oos"]["total_return"], rel=1e-12)
    assert oos.column("position").to_pylist()[0] == 0
    assert close_to(result["oos"]["psr"], ref.psr_of_equity(equity), 1e-9)
    check_grid(result, results)  # dsr: on the in-sample window it was chosen on (the equity file)


def test_trade_stats_nulls_by_the_contract():
    assert ref.trade_stats([], []) == {**dict.fromkeys(ref.trade_stats([0.1], [3]), None), "max_consecutive_losses": 0}
    one = ref.trade_stats([0.1], [3])
    assert one["sqn"] is None and one["profit_factor"] is None and one["avg_loss"] is None
    assert ref.trade_stats([-0.1, -0.2, 0.3, -0.1], [1, 2, 3, 4])["max_consecutive_losses"] == 2


def test_long_short_trades_file_against_the_execution_reference(capsys, shared_data, tmp_path):
    """With shorts and a stop-loss the equity file does not tell the trades: the plain cash-and-units
    loop of docs/execution.md does (bars held: the bars whose position is the trade's side)."""
    from backtest.strategy import get

    path = shared_data / "binance_spot_ETHUSDT_1h_misrori.csv"
    candles = read_candle_file(resolve(str(path)))
    n = 3000
    results = tmp_path / "results"
    code, (result,) = run_json(
        capsys, "--symbol", "ETHUSDT", "--input", str(path), "--end", format_time_ms(int(candles.open_time[n])),
        "--strategy", "sma_cross", "--direction", "long_short", "--sl", "4%", "--results-url", str(results),
    )  # fmt: skip
    assert code == 0
    part = candles.slice(0, n)
    strategy = get("sma_cross")
    targets = strategy.checked_signals(part, [strategy.defaults()]).astype(np.int8)[0].tolist()
    loop = reference(part.open, part.high, part.low, part.close, desired_of(targets, "long_short"), 0.001, sl=0.04)
    times = pq.read_table(results / "ETHUSDT.equity.parquet").column("open_time").to_pylist()
    assert len(times) == n
    want = []
    for entry, exit_, side, ret, kind in loop.trades:
        last = exit_ if exit_ is not None else n - 1
        bars = sum(loop.position[t] == side for t in range(entry, last + 1))
        want.append({"entry_time": times[entry], "exit_time": None if exit_ is None else times[exit_],
                     "side": side, "return": ret, "bars": bars, "exit_kind": kind})  # fmt: skip
    rows = read_rows(results / "ETHUSDT.trades.parquet")
    assert {row["sample"] for row in rows} == {"in_sample"}
    assert {row["exit_kind"] for row in rows} >= {"stop", "signal"} and {row["side"] for row in rows} == {-1, 1}
    assert_trade_rows(rows, want)
    assert_stats(result["trade_stats"], ref.trade_stats_of_trades(want))


def test_walk_forward_stitched_trades_are_each_folds_trades(capsys, shared_data, tmp_path):
    """The stitched trades: each fold's test run starts flat, so its trades are rebuilt from its part
    of the stitched curve; a trade still open at a fold's test end is open, held for the bars of its
    run inside that fold (not the bars of later folds' trades)."""
    results = tmp_path / "results"
    code, (result,) = run_json(
        capsys, "--symbol", "BTCUSDT", "--input", str(shared_data / BTC), "--start", "2022-06-01", "--end",
        "2023-06-01", "--strategy", "sma_cross", "--param", "fast=12h,1d,2d", "--param", "slow=5d,10d",
        "--walk-forward", "60d:20d", "--results-url", str(results),
    )  # fmt: skip
    assert code == 0
    table = pq.read_table(results / "BTCUSDT.equity.parquet")
    columns = {name: table.column(name).to_pylist() for name in ("open_time", "equity", "position", "fold")}
    mine = []
    for fold in sorted(set(columns["fold"])):
        part = [i for i, f in enumerate(columns["fold"]) if f == fold]
        mine += ref.trades_from_equity(
            *([columns[name][i] for i in part] for name in ("open_time", "equity", "position"))
        )
    rows = read_rows(results / "BTCUSDT.trades.parquet")
    assert {row["sample"] for row in rows} == {"out_of_sample"}
    assert len(rows) == len(mine) == result["oos"]["trades"]
    assert sum(t["exit_time"] is None for t in mine) > 1  # trades open at a fold's end
    assert_stats(result["oos"]["trade_stats"], ref.trade_stats_of_trades(mine))
    assert_trade_rows(rows, mine)


# -- the pooled walk-forward efficiency ----------------------------------------------------------


def check_efficiency(result: dict) -> dict:
    walk = result["walk_forward"]
    want = ref.walk_forward_efficiency(walk["folds"], result["oos"]["cagr"])
    for name, value in want.items():
        assert close_to(walk[name], value, 1e-12), (name, walk[name], value)
    for fold in walk["folds"]:
        assert close_to(fold["efficiency"], ref.fold_ratio(fold["in_sample"]["cagr"], fold["out_of_sample"]["cagr"]))
    assert result["oos"] == walk["stitched"]
    assert walk["next"] == {"params": walk["folds"][-1]["params"], "execution": walk["folds"][-1]["execution"]}
    assert result["next"] == walk["next"] and result["selection"] == "walk_forward"
    return want


@pytest.mark.parametrize("spec", ["60d:20d", "90d:30d:anchored"])
def test_walk_forward_efficiency_on_real_candles(capsys, shared_data, tmp_path, spec):
    results = tmp_path / "results"
    code, (result,) = run_json(
        capsys, "--symbol", "BTCUSDT", "--input", str(shared_data / BTC), "--start", "2022-06-01", "--end",
        "2023-06-01", "--strategy", "sma_cross", "--param", "fast=12h,1d,2d", "--param", "slow=5d,10d",
        "--walk-forward", spec, "--results-url", str(results),
    )  # fmt: skip
    assert code == 0
    check_efficiency(result)
    equity = pq.read_table(results / "BTCUSDT.equity.parquet").column("equity").to_pylist()
    assert close_to(result["oos"]["psr"], ref.psr_of_equity(equity), 1e-9)


ALWAYS_LONG = '''
from backtest.strategy import Param, strategy
import numpy as np


@strategy("always_long", params=[Param("copy", 1, low=1, high=2)], warmup=lambda p: 0)
def always_long(candles, copy):
    """long on every bar (`copy` changes nothing: a tie the first combination wins)"""
    return np.ones(len(candles), dtype=bool)
'''

# log return of each 5-day block; fold k trains on blocks k, k+1 and tests on block k+2
BLOCKS = [0.02, 0.01, 0.015, -0.01499, 0.02, 0.01, -0.005, 0.012, 0.008, 0.01, -0.004, 0.01]


def test_a_tiny_in_sample_cagr_blows_up_the_fold_ratio_not_the_pooled_efficiency(capsys, strategy_folder, tmp_path):
    """Always long without fees: a fold's in-sample return is its training window's price change.
    Fold 2's training window gains 1e-5 (log): its ratio is in the thousands, the pooled figure not."""
    (strategy_folder / "always.py").write_text(ALWAYS_LONG)
    block = 5 * 24
    hourly = []
    for b in BLOCKS:
        hourly += [0.0] + [b / (block - 1)] * (block - 1)
    close = 100 * np.exp(np.cumsum(hourly))
    start = EPOCH_MS + 2000 * HOUR_MS
    start -= start % (24 * HOUR_MS)
    path = tmp_path / "blocks.parquet"
    pq.write_table(make_candles(np.r_[100.0, close[:-1]], close, start_ms=start).to_table(), path)
    code, (result,) = run_json(
        capsys, "--symbol", "BLOCKUSDT", "--input", str(path), "--start", format_time_ms(start), "--strategy",
        "always_long", "--param", "copy=1,2", "--fee-bps", "0", "--walk-forward", "10d:5d",
    )  # fmt: skip
    assert code == 0
    walk = result["walk_forward"]
    assert len(walk["folds"]) == len(BLOCKS) - 2
    tiny = walk["folds"][2]["in_sample"]["cagr"]
    assert 0 < tiny < 1e-3 and walk["folds"][2]["in_sample"]["total_return"] == pytest.approx(math.expm1(1e-5))
    want = check_efficiency(result)
    assert walk["folds"][2]["efficiency"] > 1000
    assert want["efficiency"] is not None and 0 < walk["efficiency"] < 10
    assert walk["efficiency_folds"] == len(BLOCKS) - 2
    # the old figure, a mean of per-fold ratios, is what blew up
    ratios = [fold["efficiency"] for fold in walk["folds"]]
    assert sum(ratios) / len(ratios) > 100 * walk["efficiency"]


# -- selection, next, the hold-out's OOS curve -----------------------------------------------------


@pytest.mark.parametrize(
    "extra, selection",
    [
        ([], "none"),
        (["--param", "fast=6h,12h", "--param", "slow=2d"], "in_sample_best"),
        (["--param", "fast=6h,12h", "--param", "slow=2d", "--holdout-days", "20"], "holdout"),
        (["--param", "fast=6h,12h", "--param", "slow=2d", "--walk-forward", "30d:10d"], "walk_forward"),
    ],
)
def test_selection_next_and_the_holdout_curve(capsys, store, tmp_path, extra, selection):
    results = tmp_path / "results"
    code, (result,) = run_json(capsys, "--symbol", "BTCUSDT", "--data-url", store, "--start", "2024-01-10",
                               "--strategy", "sma_cross", *extra, "--results-url", str(results))  # fmt: skip
    assert code == 0 and result["selection"] == selection
    oos_file = results / "BTCUSDT.oos.equity.parquet"
    assert oos_file.exists() == (selection == "holdout")
    if selection == "holdout":
        equity = pq.read_table(oos_file).column("equity").to_pylist()
        assert equity[0] == 1.0 and equity[-1] == pytest.approx(1 + result["oos"]["total_return"], rel=1e-12)
    if selection == "walk_forward":
        assert result["next"]["params"] == result["walk_forward"]["folds"][-1]["params"]
    else:
        assert result["next"]["params"] == {k: v for k, v in result["params"].items() if k != "fee_bps"}
    assert (result["dsr"] is None) == (selection == "none")
    assert json.loads(json.dumps(result)) == result  # no NaN/inf anywhere
