"""The Airflow side of the daily backtest: the DAG's runtime, its report, and Airflow on one machine.

- At the top, the DAG's runtime: `layout` (where a run's files live), `settings` (what an operator
  configures), `planning` (a run's params checked into a `RunPlan`), `run_strategies` (the
  `strategies` param checked, and the quick look-ahead check), `jobs` (each job's name, command
  and size rendered), `form` (the trigger form), `tasks` (the task bodies the DAG wires), `pools`
  (whether the deployment has the DAG's pools, asked by `plan`), `batch` (the AWS Batch operator
  and trigger whose jobs follow their tasks: re-attach, bounded attempts, terminate on kill),
  `alerts` (the run's alert) and `ui` (the Backtests page). `layout`, `planning`, `run_strategies` and `jobs` import no Airflow
  (`settings` only to read the pairs Variable and the `[backtest]` configuration); dependencies point one way (jobs -> planning ->
  run_strategies), and `tasks` and `ui` use `report/`.
- `report/`: what the rank step writes and shows (the leaderboard, its grid file, the run's cost,
  the HTML report); it imports `backtest` and the plain modules above, never Airflow.
- `local/`: `batch.py` (the local stand-in for AWS Batch), `demo.py` (`make demo`), `stack.py`
  (`make airflow`); it may import everything, and nothing imports it but the DAG.

Installed with the project (`pip install -e .` here; its wheel on MWAA or any Airflow 3), so the DAG, the plugin, every Airflow component,
the tests and the benchmarks import it without any path set-up. The job itself is `backtest`.
"""
