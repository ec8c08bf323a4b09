"""SQLite settings for the tests' real Airflow stack (imported by Airflow through its config).

Several Airflow processes (api-server, scheduler, dag-processor, task runners, the CLI) write to
one SQLite file; Python's default 5-second busy timeout lets a writer give up with "database is
locked" on a loaded machine. Wait up to a minute instead.
"""

CONNECT_ARGS = {"timeout": 60}
