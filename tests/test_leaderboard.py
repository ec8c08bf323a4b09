"""The rank step's files (backtest_airflow/report/leaderboard.py): the leaderboard of (pair, strategy) rows,
the grid file with every combination, and the cost accounting (Fargate prices applied to the jobs'
records of every strategy, with Batch's one-minute minimum).

The results are the job's own (`backtest.job.backtest` + `write_result`, as `python -m backtest run`
writes them) on synthetic candles, one folder per strategy; the plans are built directly with their
`strategies` filled in."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from backtest.data.refresh import refresh_pair
from backtest.data.storage import resolve
from backtest.job import RunSpec, backtest, write_error, write_result
from backtest.params import HOUR_MS, parse_time_ms
from backtest.simulation.metrics import FLAT_METRIC_NAMES, flat_metrics
from backtest.simulation.walkforward import parse_walk_forward
from backtest.strategy import grid_of
from backtest_airflow import layout
from backtest_airflow.planning import RunPlan, make_plan
from backtest_airflow.report import cost as run_cost
from backtest_airflow.report import grid_file, leaderboard, leaderboard_files

PRICES = {"vcpu_hour": 0.04048, "gb_hour": 0.004445, "spot_vcpu_hour": 0.0129159, "spot_gb_hour": 0.001418}
AS_OF = datetime.fromisoformat("2026-10-01T00:00:00+00:00")
PAIRS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
PARAM_COLUMNS = [f"param_{k}" for k in ("window", "fast", "slow", "period", "lower", "upper")]
PARAM_COLUMNS += [f"param_{k}_bars" for k in ("window", "fast", "slow", "period")]
STRATEGIES = [
    {"name": "sma_trend", "params": {"window": "1d"}},
    {"name": "sma_cross", "params": {"fast": "6h:18h:6h", "slow": "12h:2d:12h"}},
    {"name": "rsi_reversion", "params": {"lower": "20,30", "upper": "70"}},
]


def plan_for(store: str, strategies: list[dict], **params) -> RunPlan:
    plan = make_plan({"pairs": PAIRS, "lookback_days": 20, "fee_bps": 10, **params}, store, "dag", "run", AS_OF)
    return dataclasses.replace(plan, strategies=strategies)


def run_jobs(plan: RunPlan, skip: set = frozenset(), stale: set = frozenset(), errors: dict | None = None) -> None:
    """Backtest every (pair, strategy) as its job would, into its strategy's folder; `skip`: no
    result; `stale`: the window ends 12 hours early; `errors`: an error record instead of a result."""
    errors = errors or {}
    for symbol in plan.pairs:
        refresh_pair(symbol, plan.results_url.split("/results/")[0], until_ms=parse_time_ms(plan.end),
                     history_days=plan.lookback_days + 10, source="synthetic")  # fmt: skip
        for item in plan.strategies:
            key, folder = (symbol, item["name"]), layout.strategy_results_url(plan.results_url, item["name"])
            if key in skip:
                continue
            if key in errors:
                write_error(folder, symbol, errors[key], 3)
                continue
            end = parse_time_ms(plan.end) - (12 * HOUR_MS if key in stale else 0)
            spec = RunSpec(
                symbol=symbol,
                grid=grid_of(item["name"], item["params"]),
                fee_bps=plan.fee_bps,
                start_ms=parse_time_ms(plan.start),
                end_ms=end,
                data_url=plan.results_url.split("/results/")[0],
                holdout_days=plan.holdout_days,
                select_by=plan.rank_by if plan.rank_by != "buy_hold_return" else "total_return",
                walk_forward=parse_walk_forward(plan.walk_forward) if plan.walk_forward else None,
            )
            write_result(folder, *backtest(spec))


def result_of(plan: RunPlan, symbol: str, strategy: str) -> dict:
    path = Path(layout.strategy_results_url(plan.results_url, strategy)) / f"{symbol}.json"
    return json.loads(path.read_text())


def labels(params: dict) -> str:
    """A combination as the user writes it, independently of params_text."""
    bars = {k.removesuffix("_bars") for k in params if k.endswith("_bars")}
    return " ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items() if k[:-5] not in bars
    )


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> dict:
    """A run of 4 pairs x 3 strategies ranked by sharpe: one (pair, strategy) without a result (its
    task failed), one with an error record, one with no trace at all, one stale."""
    store = str(tmp_path_factory.mktemp("leaderboard") / "store")
    plan = plan_for(store, STRATEGIES, rank_by="sharpe", window="1d")
    run_jobs(
        plan,
        skip={("ETHUSDT", "sma_cross"), ("XRPUSDT", "rsi_reversion")},
        stale={("SOLUSDT", "sma_trend")},
        errors={("BTCUSDT", "rsi_reversion"): "no candles for BTCUSDT"},
    )
    failed_tasks = {("ETHUSDT", "sma_cross"): "backtest task failed"}
    board = leaderboard.build(plan, failed_tasks)
    return {"plan": plan, "board": board}


def test_leaderboard_ranks_pair_strategy_rows_by_their_best_combination(mixed):
    plan, board = mixed["plan"], mixed["board"]
    assert list(board.columns) == list(leaderboard.COLUMNS)
    assert len(board) == len(PAIRS) * len(STRATEGIES)
    assert sorted(zip(board["symbol"], board["strategy"], strict=True)) == sorted(
        (p, s["name"]) for p in PAIRS for s in STRATEGIES
    )  # every (pair, strategy) once
    ok = board[board["status"] == "ok"]
    assert (
        len(ok) == 8 and ok["rank"].tolist() == list(range(1, 9)) and board.index[: len(ok)].tolist() == list(range(8))
    )
    sharpe = ok["sharpe"].tolist()
    assert all(math.isnan(b) or a >= b for a, b in itertools.pairwise(sharpe)), sharpe  # descending, undefined last
    for row in ok.to_dict("records"):
        result = result_of(plan, row["symbol"], row["strategy"])
        chosen = {k: v for k, v in result["params"].items() if k != "fee_bps"}  # always the chosen combination's
        assert chosen == result.get("best", chosen) and row["params"] == labels(chosen)
        figures = flat_metrics(result)  # `exits` as exits_<kind> columns
        for name in FLAT_METRIC_NAMES:  # the chosen combination's figures, as the job reported them
            assert row[name] == figures[name] or (figures[name] is None and pd.isna(row[name])), (row["symbol"], name)
        assert row["excess_return"] == result["total_return"] - result["buy_hold_return"]
        grid = result.get("grid")
        assert row["combinations"] == (len(result["sweep"]) if grid else 1)
        assert row["select_by"] == (grid["select_by"] if grid else None) or (not grid and pd.isna(row["select_by"]))
        assert row["best"]
    sma_cross = ok[ok["strategy"] == "sma_cross"].iloc[0]
    assert sma_cross["combinations"] == 10 and sma_cross["skipped"] == 2  # fast >= slow: 12h/12h, 18h/12h
    assert set(ok.loc[ok["strategy"] == "sma_trend", "params"]) == {"window=1d"}

    # Failed and stale rows follow, unranked, by symbol and then in the plan's strategy order.
    rest = board.iloc[len(ok) :]
    assert rest["rank"].isna().all() and rest["best"].all()
    assert list(zip(rest["symbol"], rest["strategy"], rest["status"].str.split(":").str[0], strict=True)) == [
        ("BTCUSDT", "rsi_reversion", "failed"),
        ("ETHUSDT", "sma_cross", "failed"),
        ("SOLUSDT", "sma_trend", "stale"),
        ("XRPUSDT", "rsi_reversion", "failed"),
    ]
    assert rest["status"].tolist()[:2] == ["failed: no candles for BTCUSDT", "failed: backtest task failed"]
    assert rest["status"].iloc[2].endswith("is 12h before the window's end")
    assert rest["status"].iloc[3] == "failed: no result"
    assert rest["params"].iloc[2] == "window=1d"  # a stale row keeps its figures, unranked
    assert rest[["total_return", "params"]].iloc[[0, 1, 3]].isna().all().all()


def test_ranking_direction_and_out_of_sample(tmp_path):
    store = str(tmp_path / "store")
    plan = plan_for(store, STRATEGIES[:2], rank_by="max_drawdown", holdout_days=5, rank_on="out_of_sample")
    run_jobs(plan)
    board = leaderboard.build(plan, {}, grid=False)
    assert not (Path(plan.results_url) / layout.GRID_PARQUET).exists()  # grid=False: the table only
    assert board["rank"].tolist() == list(range(1, 9))
    oos = board["oos_max_drawdown"].tolist()
    assert oos == sorted(oos)  # smaller is better, on the hold-out's figures
    for row in board.to_dict("records"):
        result = result_of(plan, row["symbol"], row["strategy"])
        assert row["oos_max_drawdown"] == result["oos"]["max_drawdown"] and row["split"] == result["split"]
        assert row["select_by"] == "max_drawdown" == result["grid"]["select_by"]


def test_grid_file_holds_every_combination_of_every_result(mixed):
    plan, board = mixed["plan"], mixed["board"]
    path = Path(plan.results_url) / layout.GRID_PARQUET
    schema = pq.read_schema(path)
    assert schema.names[:6] == list(grid_file.GRID_KEYS)
    types = {name: str(schema.field(name).type) for name in schema.names}
    assert {k: v for k, v in types.items() if k.startswith(layout.GRID_PARAM_PREFIX)} == {
        "param_window": "string",
        "param_window_bars": "int64",
        "param_fast": "string",
        "param_fast_bars": "int64",
        "param_slow": "string",
        "param_slow_bars": "int64",
        "param_period": "string",
        "param_period_bars": "int64",
        "param_lower": "double",
        "param_upper": "double",
    }
    assert types["trades"] == "int64" and types["sharpe"] == "double" and "oos_sharpe" not in types  # no hold-out
    grid = pq.read_table(path).to_pylist()

    # Exactly the sweep rows of every (pair, strategy) with a result, stale ones included, in plan order.
    keys = [(r["symbol"], r["strategy"]) for r in board.to_dict("records") if not pd.isna(r["params"])]
    expected = []
    for symbol in PAIRS:
        for item in STRATEGIES:
            if (symbol, item["name"]) not in keys:
                continue
            result = result_of(plan, symbol, item["name"])
            status = board.set_index(["symbol", "strategy"]).loc[(symbol, item["name"]), "status"]
            sweep = result.get("sweep") or [{**result, "params": {k: v for k, v in result["params"].items()
                                                                 if k != "fee_bps"}}]  # fmt: skip
            chosen = result.get("best", sweep[0]["params"])
            for i, row in enumerate(sweep):
                expected.append(
                    {
                        "symbol": symbol,
                        "strategy": item["name"],
                        "status": status,
                        "combination": i,
                        "best": row["params"] == chosen,
                        "params": labels(row["params"]),
                        **{k: row["execution"][k] for k in ("direction", "sl", "tp", "trail")},
                        **dict.fromkeys(PARAM_COLUMNS),
                        **{f"param_{k}": v for k, v in row["params"].items()},
                        **flat_metrics(row),
                        "excess_return": row["total_return"] - row["buy_hold_return"],
                    }
                )
    assert grid == expected
    assert len(grid) == 4 * 1 + 3 * 10 + 2 * 2  # sma_trend (a stale one too), sma_cross, rsi_reversion results
    # Each (pair, strategy)'s best row is its leaderboard row.
    best = pd.DataFrame([r for r in grid if r["best"]]).set_index(["symbol", "strategy"])
    indexed = board.set_index(["symbol", "strategy"])
    for key, row in best.iterrows():
        assert row["params"] == indexed.loc[key, "params"] and row["sharpe"] == indexed.loc[key, "sharpe"]


def test_grid_file_with_a_hold_out_and_a_shared_parameter_name(tmp_path):
    """oos_* columns with a hold-out; a parameter name two strategies type differently becomes text."""
    from backtest_airflow.report.grid_file import grid_schema

    store = str(tmp_path / "store")
    plan = plan_for(store, STRATEGIES[:2], holdout_days=5)
    run_jobs(plan)
    leaderboard.build(plan, {})
    grid = pd.read_parquet(Path(plan.results_url) / layout.GRID_PARQUET)
    assert len(grid) == len(PAIRS) * 11
    for row in grid.to_dict("records"):
        sweep = result_of(plan, row["symbol"], row["strategy"])["sweep"][row["combination"]]
        assert row["oos_total_return"] == sweep["oos"]["total_return"] and row["oos_trades"] == sweep["oos"]["trades"]
        assert row["psr"] == sweep["psr"] and row["oos_psr"] == sweep["oos"]["psr"]  # FLAT_METRIC_NAMES has psr

    a = {"symbol": "A", "params": {"x": "1d", "x_bars": 24, "fee_bps": 1}, "total_return": 0.1}
    b = {"symbol": "B", "params": {"x": 2.5, "fee_bps": 1}, "total_return": 0.2}
    schema = grid_schema([a, b])
    assert str(schema.field("param_x").type) == "string" and str(schema.field("param_x_bars").type) == "int64"
    writer = grid_file.GridWriter(schema)
    writer.add(grid_file.grid_columns("A", "s1", a, "ok"))
    writer.add(grid_file.grid_columns("B", "s2", b, "ok"))
    writer.close(resolve(str(tmp_path / "shared")).join("grid.parquet"))
    table = pq.read_table(tmp_path / "shared" / "grid.parquet").to_pylist()
    assert [(r["param_x"], r["param_x_bars"], r["params"]) for r in table] == [
        ("1d", 24, "x=1d"),
        ("2.5", None, "x=2.5"),
    ]


def test_leaderboard_files_hold_best_rows_and_name_the_grid_file(mixed, tmp_path):
    plan, board = mixed["plan"], mixed["board"]
    title = leaderboard_files.title(plan, board)
    assert "sma_trend window=1d; sma_cross fast=6h:18h:6h slow=12h:2d:12h; rsi_reversion" in title
    paths = leaderboard_files.write(board, str(tmp_path), title)
    assert len(pd.read_parquet(paths["leaderboard.parquet"])) == len(PAIRS) * len(STRATEGIES)
    assert Path(paths["leaderboard.csv"]).read_text().count("\n") == len(PAIRS) * len(STRATEGIES) + 1
    markdown = Path(paths["leaderboard.md"]).read_text()
    assert "| strategy" in markdown and "| params" in markdown and "fast=" in markdown
    assert "all 38 (pair, strategy, combination) rows are in grid.parquet" in markdown
    assert "grid.parquet" not in paths  # written by build, into the run's folder
    assert layout.GRID_PARQUET in leaderboard_files.write(board, plan.results_url, title)

    single = plan_for(str(tmp_path / "store"), STRATEGIES[:1])
    run_jobs(single)
    one = leaderboard.build(single, {})
    text = leaderboard_files.to_markdown(one, leaderboard_files.title(single, one))
    assert "grid.parquet" not in text and "| params" not in text  # one combination: as before, plus `strategy`
    assert text.startswith("# Leaderboard") and "(sma_trend window=1d, by total_return)" in text


def test_cost_summary_adds_up_job_records_of_every_strategy(tmp_path):
    results = tmp_path / "run"
    for strategy, name, seconds in (("sma_trend", "a", 30.0), ("sma_cross", "b", 150.0)):
        folder = Path(layout.strategy_results_url(str(results), strategy)) / "_jobs"
        folder.mkdir(parents=True)
        record = {"job_name": name, "symbols": ["AAUSDT", "BBUSDT"], "failed": [], "wall_seconds": seconds,
                  "vcpu": 1, "memory_mib": 2048}  # fmt: skip
        (folder / f"{name}.json").write_text(json.dumps(record))
    (results / "_jobs").mkdir()  # not a strategy's folder: not counted
    (results / "_jobs" / "old.json").write_text(json.dumps({**record, "job_name": "old"}))
    plan = make_plan({"pairs": ["AAUSDT", "BBUSDT"], "pairs_per_job": 2}, "/unused", "dag", "run", AS_OF)
    plan = dataclasses.replace(plan, results_url=str(results), strategies=STRATEGIES[:2])
    cost = run_cost.cost_summary(plan, PRICES)
    assert cost["jobs"] == 2 and cost["jobs_planned"] == 2 and cost["vcpu_seconds"] == 180.0
    assert cost["billed_vcpu_seconds"] == 60 + 150  # one-minute minimum for the short job
    hours = 210 / 3600
    assert cost["cost_on_demand_usd"] == pytest.approx(hours * 0.04048 + hours * 2 * 0.004445, abs=1e-6)
    assert cost["cost_spot_usd"] == pytest.approx(hours * 0.0129159 + hours * 2 * 0.001418, abs=1e-6)
    assert cost["text"].startswith("2 pairs x 2 strategies, 2 jobs, 180.0 vCPU-seconds")
    short, long = sorted(cost["per_job"], key=lambda job: job["wall_seconds"])
    assert (short["strategy"], long["strategy"]) == ("sma_trend", "sma_cross")
    assert short["billed_seconds"] == 60 and long["billed_seconds"] == 150
    assert long["cost_on_demand_usd"] == pytest.approx(150 / 3600 * (0.04048 + 2 * 0.004445))
    assert short["cost_spot_usd"] + long["cost_spot_usd"] == pytest.approx(cost["cost_spot_usd"], abs=1e-6)

    one = run_cost.cost_summary(dataclasses.replace(plan, strategies=STRATEGIES[:1]), PRICES)
    assert one["jobs"] == 1 and one["text"].startswith("2 pairs, 1 jobs, 30.0 vCPU-seconds")


# -- walk-forward --------------------------------------------------------------------------------


def test_walk_forward_ranks_on_the_stitched_figures_beside_the_folds_in_sample_ones(tmp_path):
    store = str(tmp_path / "store")
    plan = plan_for(store, STRATEGIES[:2], rank_by="sharpe", walk_forward="8d:4d")  # 20 days: 3 folds
    assert (plan.rank_on, plan.metric) == ("out_of_sample", "oos_sharpe")
    run_jobs(plan)
    board = leaderboard.build(plan, {})
    assert list(board.columns) == list(leaderboard.COLUMNS) and len(board) == len(PAIRS) * 2
    assert board["rank"].tolist() == list(range(1, 9))
    oos = board["oos_sharpe"].tolist()
    assert all(math.isnan(b) or a >= b for a, b in itertools.pairwise(oos)), oos  # ranked on the stitched sharpe
    for row in board.to_dict("records"):
        result = result_of(plan, row["symbol"], row["strategy"])
        walk = result["walk_forward"]
        assert result["oos"] == walk["stitched"]
        folds_in_sample = [flat_metrics(fold["in_sample"]) for fold in walk["folds"]]
        for name in FLAT_METRIC_NAMES:  # the stitched figures beside the whole window's (chosen with hindsight)
            stitched, whole = flat_metrics(walk["stitched"])[name], flat_metrics(result)[name]
            assert row[f"oos_{name}"] == stitched or (stitched is None and pd.isna(row[f"oos_{name}"])), name
            assert row[name] == whole or (whole is None and pd.isna(row[name])), name
            # the folds' mean in-sample figure of their chosen combinations
            values = [figures[name] for figures in folds_in_sample if figures[name] is not None]
            mean = row[f"wf_is_{name}"]
            assert mean == pytest.approx(sum(values) / len(values), rel=1e-12) if values else pd.isna(mean), name
        assert row["wf_folds"] == len(walk["folds"]) == 3
        assert row["wf_efficiency"] == walk["efficiency"] or (
            walk["efficiency"] is None and pd.isna(row["wf_efficiency"])
        )
        assert row["wf_efficiency_folds"] == walk["efficiency_folds"]
        chosen = [fold["params"] for fold in walk["folds"]]
        changes = sum(a != b for a, b in itertools.pairwise(chosen))
        assert row["wf_param_changes"] == walk["param_changes"] == changes
        assert row["wf_param_change_share"] == walk["param_change_share"] == changes / 2
        assert row["wf_last_params"] == labels(chosen[-1])
        assert row["params"] == labels(result["best"]) and pd.isna(row["split"])

    # The grid file is the whole window's grid: the very file a run without the walk-forward writes.
    plain = dataclasses.replace(plan, walk_forward="", rank_on="in_sample", results_url=str(tmp_path / "plain"))
    run_jobs(plain)
    leaderboard.build(plain, {})
    grid = pd.read_parquet(Path(plan.results_url) / layout.GRID_PARQUET)
    pd.testing.assert_frame_equal(grid, pd.read_parquet(Path(plain.results_url) / layout.GRID_PARQUET))
    assert len(grid) == len(PAIRS) * 11 and not [c for c in grid.columns if c.startswith(("oos_", "wf_"))]

    # The Markdown: the stitched ranking metric beside the folds' in-sample one, cagr both ways, efficiency.
    markdown = leaderboard_files.to_markdown(board, leaderboard_files.title(plan, board), rank_by="sharpe")
    head, _, *lines = markdown.split("\n\n")[1].splitlines()
    heads = [h.strip() for h in head.strip("|").split("|")]
    assert heads == [
        "rank", "symbol", "strategy", "status", "oos_total_return", "oos_sharpe", "wf_is_sharpe", "oos_cagr",
        "wf_is_cagr", "wf_efficiency", "wf_efficiency_median", "wf_param_changes", "wf_folds", "next_params",
    ]  # out of sample only: not the whole window's grid best (params, total_return, ...)  # fmt: skip
    first = dict(zip(heads, (c.strip() for c in lines[0].strip("|").split("|")), strict=True))
    top = board.iloc[0]
    assert first["symbol"] == top["symbol"] and float(first["oos_sharpe"]) == round(top["oos_sharpe"], 2)
    assert first["wf_is_cagr"] == f"{top['wf_is_cagr']:.2%}" and first["wf_folds"] == "3"
    assert "Walk-forward: ranked on the stitched out-of-sample figures" in markdown
    assert (
        "(sma_trend window=1d; sma_cross fast=6h:18h:6h slow=12h:2d:12h, walk-forward 8d:4d, by oos_sharpe)" in markdown
    )


def test_without_a_walk_forward_its_columns_are_empty(mixed):
    board = mixed["board"]
    assert board[list(leaderboard.WF_COLUMNS)].isna().all().all()
    markdown = leaderboard_files.to_markdown(board, "t", rank_by="sharpe")
    assert "wf_" not in markdown and "oos_" not in markdown


# -- how figures were chosen, deflated Sharpe, trade statistics (synthetic result JSONs) ----------

TRADE_STATS = {"best_trade": 0.21, "worst_trade": -0.08, "avg_trade": 0.011, "avg_win": 0.06, "avg_loss": -0.03,
               "profit_factor": 1.7, "expectancy": 0.011, "sqn": 1.4, "avg_trade_bars": 30.5, "max_trade_bars": 90,
               "max_consecutive_losses": 4}  # fmt: skip
OOS_TRADE_STATS = {**TRADE_STATS, "profit_factor": None, "expectancy": -0.002, "sqn": None, "max_consecutive_losses": 0}


def figures(seed: float, psr: float | None = 0.7) -> dict:
    return {"total_return": 0.1 * seed, "buy_hold_return": 0.05, "cagr": 0.12 * seed, "sharpe": seed, "psr": psr,
            "max_drawdown": 0.2, "trades": 10, "exits": {"signal": 10}, "bars": 480}  # fmt: skip


def combination(fast: str, slow: str, seed: float, **more) -> dict:
    params = {"fast": fast, "fast_bars": int(fast[:-1]) * 24, "slow": slow, "slow_bars": int(slow[:-1]) * 24}
    return {"params": params, "execution": {"direction": "long"}, **figures(seed, **more)}


def synthetic_result(plan: RunPlan, symbol: str, strategy: str, sweep: list[dict], best: int, **keys) -> dict:
    """A result JSON as the job writes it (old or new), with just the keys the rank step reads."""
    last = datetime.fromisoformat(plan.end.replace("Z", "+00:00")) - pd.Timedelta(hours=1)
    result = {"symbol": symbol, "strategy": strategy, "params": {**sweep[best]["params"], "fee_bps": 10},
              "execution": sweep[best]["execution"], "first_bar": plan.start, "last_bar": f"{last:%Y-%m-%dT%H:%M:%SZ}",
              "start": plan.start, "end": plan.end, "synthetic": True, "data_source": "synthetic",
              **{k: v for k, v in sweep[best].items() if k not in ("params", "execution")}}  # fmt: skip
    if len(sweep) > 1 or keys.get("split") or keys.get("walk_forward"):
        result |= {"best": sweep[best]["params"], "sweep": sweep, "grid": {"select_by": "sharpe", "skipped": 0}}
    result |= keys
    folder = Path(layout.strategy_results_url(plan.results_url, strategy))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{symbol}.json").write_text(json.dumps(result))
    return result


@pytest.fixture
def chosen(tmp_path) -> dict:
    """A run whose results are synthetic JSONs: new ones (with `selection`, `dsr`, `next`,
    `trade_stats`) and older ones without them: a grid, a hold-out, a walk-forward, one combination."""
    strategies = [{"name": "sma_cross", "params": {"fast": "1d,2d", "slow": "5d"}}, {"name": "sma_trend"}]
    plan = plan_for(str(tmp_path / "store"), strategies, rank_by="sharpe")
    grid = [combination("1d", "5d", 1.2, psr=0.9), combination("2d", "5d", 0.4, psr=None)]
    results = {
        ("BTCUSDT", "sma_cross"): synthetic_result(
            plan,
            "BTCUSDT",
            "sma_cross",
            grid,
            0,
            selection="in_sample_best",
            dsr=0.31,
            next={"params": grid[0]["params"], "execution": {}},
            trade_stats=TRADE_STATS,
        ),
        ("ETHUSDT", "sma_cross"): synthetic_result(plan, "ETHUSDT", "sma_cross", grid, 1),  # old: no selection
        ("SOLUSDT", "sma_cross"): synthetic_result(
            plan,
            "SOLUSDT",
            "sma_cross",
            [{**row, "oos": figures(0.5)} for row in grid],
            0,
            split=plan.end,
            oos={**figures(0.3, psr=0.55), "trade_stats": OOS_TRADE_STATS},
        ),  # an old hold-out (with the new oos trade statistics)
        ("XRPUSDT", "sma_cross"): synthetic_result(
            plan,
            "XRPUSDT",
            "sma_cross",
            grid,
            0,
            oos=figures(-0.2),
            walk_forward={
                "folds": [
                    {"params": grid[0]["params"], "in_sample": figures(2.0)},
                    {"params": grid[1]["params"], "in_sample": figures(1.0)},
                ],
                "efficiency": -0.4,
                "efficiency_median": 0.25,
                "efficiency_folds": 2,
                "param_changes": 1,
                "param_change_share": 1.0,
            },
        ),  # an old walk-forward: no `next`, so the last fold's choice is next
        ("BTCUSDT", "sma_trend"): synthetic_result(
            plan,
            "BTCUSDT",
            "sma_trend",
            [{"params": {"window": "1d", "window_bars": 24}, "execution": {}, **figures(0.8)}],
            0,
        ),
    }
    return {"plan": plan, "results": results, "board": leaderboard.build(plan, {}).set_index(["symbol", "strategy"])}


def test_selection_dsr_next_params_and_trade_statistics_columns(chosen):
    board = chosen["board"]
    assert {"selection", "dsr", "psr", "oos_psr", "next_params", "wf_efficiency_median", "profit_factor",
            "expectancy", "sqn", "max_consecutive_losses", "oos_profit_factor", "oos_expectancy", "oos_sqn",
            "oos_max_consecutive_losses"} <= set(board.columns)  # fmt: skip
    row = board.loc[("BTCUSDT", "sma_cross")]
    assert row["selection"] == "in_sample_best" and row["dsr"] == 0.31 and row["psr"] == 0.9
    assert row["next_params"] == "fast=1d slow=5d" == row["params"]
    assert [row[k] for k in leaderboard.TRADE_COLUMNS] == [1.7, 0.011, 1.4, 4]
    assert board.loc[("BTCUSDT", "sma_cross"), ["oos_psr", *leaderboard.OOS_COLUMNS[-4:]]].isna().all()

    old = board.loc[("ETHUSDT", "sma_cross")]  # a result from before: inferred, the rest null
    assert old["selection"] == "in_sample_best" and old["next_params"] == "fast=2d slow=5d" == old["params"]
    assert pd.isna(old["dsr"]) and pd.isna(old["psr"]) and old[list(leaderboard.TRADE_COLUMNS)].isna().all()

    holdout = board.loc[("SOLUSDT", "sma_cross")]
    assert holdout["selection"] == "holdout" and holdout["oos_psr"] == 0.55
    assert pd.isna(holdout["oos_profit_factor"]) and holdout["oos_expectancy"] == -0.002
    assert holdout["oos_max_consecutive_losses"] == 0 and pd.isna(holdout["oos_sqn"])

    walk = board.loc[("XRPUSDT", "sma_cross")]
    assert walk["selection"] == "walk_forward" and walk["next_params"] == "fast=2d slow=5d"  # the last fold's
    assert walk["params"] == "fast=1d slow=5d"  # the whole window's best, in the files only
    assert walk["wf_efficiency"] == -0.4 and walk["wf_efficiency_median"] == 0.25 and walk["wf_efficiency_folds"] == 2

    single = board.loc[("BTCUSDT", "sma_trend")]
    assert single["selection"] == "none" and single["next_params"] == "window=1d" and pd.isna(single["dsr"])
    assert str(board["max_consecutive_losses"].dtype) == "Int64"


def test_selection_of_an_older_result_is_inferred_as_the_job_decides():
    one = {"params": {"window": "1d"}}
    grid = {**one, "sweep": [{}, {}]}
    assert leaderboard.selection_of(one) == "none"
    assert leaderboard.selection_of(grid) == "in_sample_best"
    assert leaderboard.selection_of({**grid, "split": "2026-01-01T00:00:00Z"}) == "holdout"
    assert leaderboard.selection_of({**one, "sweep": [{}], "walk_forward": {"folds": []}}) == "walk_forward"
    assert leaderboard.selection_of({**grid, "selection": "holdout"}) == "holdout"  # a result's own word wins


def test_grid_file_has_every_combinations_psr(chosen):
    grid = pd.read_parquet(Path(chosen["plan"].results_url) / layout.GRID_PARQUET)
    for row in grid.to_dict("records"):
        sweep = chosen["results"][row["symbol"], row["strategy"]].get("sweep")
        expected = (
            sweep[row["combination"]]["psr"] if sweep else chosen["results"][row["symbol"], row["strategy"]]["psr"]
        )
        assert row["psr"] == expected or (expected is None and pd.isna(row["psr"]))


def test_markdown_marks_hindsight_and_shows_dsr_beside_sharpe(chosen):
    board = chosen["board"].reset_index()
    board = board[board["selection"] != "walk_forward"]  # a walk-forward's table has no whole-window sharpe
    markdown = leaderboard_files.to_markdown(board, "t", rank_by="sharpe")
    head = [h.strip() for h in markdown.split("\n\n")[1].splitlines()[0].strip("|").split("|")]
    assert head[head.index("sharpe") + 1] == "dsr"
    assert "**Hindsight:** 2 row(s) (`selection` in_sample_best) are the in-sample best of 2 combinations" in markdown
