"""The Airflow glue of the daily backtest: settings, planning, task bodies, local runner, leaderboard,
report, the Backtests UI, alerts, and the `make demo` / `make airflow` commands.

Installed with the project (`pip install -e .`), so the DAG, the plugin, every Airflow component,
the tests and the benchmarks import it without any path set-up. The job itself is `backtest`.
"""
