"""What the rank step writes and shows: the leaderboard and grid files, the run's cost, and the
HTML report (charts, templates, styles) that the Backtests page of the UI serves too.

May import `backtest` and `backtest_airflow.layout` / `planning` (plain Python); no Airflow import.
Inside, imports point down only: `leaderboard` (the rank step's files) and `page` (the report) on
top; `sections`, `cards`, `charts`, `grid_file`, `leaderboard_files` and `cost` below them; `results`,
`columns` and `formatting` at the bottom.
"""
