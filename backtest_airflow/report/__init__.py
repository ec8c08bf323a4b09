"""What the rank step writes and shows: the leaderboard and grid files, the run's cost, and the
HTML report (charts, templates, styles) that the Backtests page of the UI serves too.

May import `backtest` and `backtest_airflow.layout` / `planning` (plain Python); no Airflow import.
"""
