"""Airflow on one machine: the local stand-in for AWS Batch (the job's container command in a
subprocess), `make demo` (the DAG once under `dag.test()`) and `make airflow` (PostgreSQL + every component).

May import everything in `backtest_airflow`; nothing else imports this package but the DAG (the local operator).
"""
