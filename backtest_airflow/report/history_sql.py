"""The run history as SQL: DuckDB queries over the results store (docs/report.md, "History").

Every run's `leaderboard.parquet` sits under `date=<date>/run=<run>/` and each date's latest
successful run is named by `date=<date>/_latest.json` (`report.history`), so the whole history
is one hive-partitioned dataset. These queries read it in place: a local folder, or S3 with
DuckDB's httpfs extension (`INSTALL httpfs; LOAD httpfs;` and S3 credentials: not done here,
DuckDB is a dev/test dependency, not in the job image or the Airflow environment). Athena reads
every object below a table's location, so its Glue tables (infra/backtest-stack.yaml) read the
copies `rank` writes under `tables/` with one fixed schema (layout.py; docs/deployment.md, "Athena").
"""

from __future__ import annotations

from backtest_airflow import layout

# One row per date: its latest successful run (the pointer's fields).
LATEST_RUNS = """
SELECT date, run, run_id, written_at
FROM read_json('{root}/date=*/{pointer}', columns = {{date: 'VARCHAR', run: 'VARCHAR', run_id: 'VARCHAR',
               results_url: 'VARCHAR', written_at: 'VARCHAR'}}, hive_partitioning = false)
ORDER BY date
"""

# One pair's rows (every strategy) in each date's latest successful run, oldest first.
PAIR_HISTORY = """
WITH latest AS ({latest})
SELECT board.date, board.run, board.strategy, board.rank, board.status, board.position_now,
       board.next_params, board.{metric} AS metric
FROM read_parquet('{root}/date=*/run=*/{leaderboard}', hive_partitioning = true,
                  hive_types_autocast = false, union_by_name = true) AS board
JOIN latest USING (date, run)
WHERE board.symbol = $symbol
ORDER BY board.date, board.strategy
"""


def latest_runs_sql(data_url: str) -> str:
    root = layout.results_root(data_url)
    return LATEST_RUNS.format(root=root, pointer=layout.LATEST_JSON)


def pair_history_sql(data_url: str, metric: str = "total_return") -> str:
    """The query of one pair's history (bind `$symbol`); `metric` is a leaderboard column."""
    if not metric.replace("_", "").isalnum():
        raise ValueError(f"not a leaderboard column: {metric!r}")
    root = layout.results_root(data_url)
    latest = latest_runs_sql(data_url).replace("ORDER BY date", "")
    return PAIR_HISTORY.format(latest=latest, root=root, leaderboard=layout.LEADERBOARD_PARQUET, metric=metric)


def query(sql: str, **params):
    """Run one of these queries with DuckDB (a dev dependency); rows as a pandas DataFrame."""
    import duckdb

    with duckdb.connect() as connection:
        return connection.execute(sql, params).df()
