"""A stand-in for AWS Batch on one machine: runs the job's container command as a subprocess.

`LocalBatchOperator` takes the same kwargs as the amazon provider's `BatchOperator` (job_name,
job_queue, job_definition, container_overrides with `command` and `environment`, tags), so the
DAG maps one `plan` output over either. The command runs after the image's entrypoint,
`python -m backtest`, with this interpreter. Output is streamed into the task log; a non-zero
exit fails the task with the job's last stderr lines (without retries for the job's own
input/data errors and a strategy at fault, exit codes 2, 3 and 5). Concurrency is bounded by the
DAG (`max_active_tis_per_dagrun`), like a Batch queue's max vCPUs bound concurrent jobs.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from backtest.errors import PERMANENT_EXIT_CODES

ENTRYPOINT = (sys.executable, "-m", "backtest")


class LocalBatchOperator(BaseOperator):
    """Run one Batch-style job locally (see module docstring)."""

    template_fields: Sequence[str] = ("job_name", "job_queue", "job_definition", "container_overrides", "tags")
    ui_color = "#e8f1d9"

    def __init__(
        self,
        *,
        job_name: str,
        job_queue: str = "local",
        job_definition: str = "local",
        container_overrides: dict | None = None,
        tags: dict | None = None,
        timeout_seconds: int = 3600,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name
        self.job_queue = job_queue
        self.job_definition = job_definition
        self.container_overrides = container_overrides or {}
        self.tags = tags or {}
        self.timeout_seconds = timeout_seconds

    def execute(self, context: Any) -> str:
        command = list(self.container_overrides.get("command") or [])
        if not command:
            raise AirflowException(f"job {self.job_name}: container_overrides has no command")
        env = dict(os.environ)
        for item in self.container_overrides.get("environment") or []:
            env[item["name"]] = item["value"]
        argv = [*ENTRYPOINT, *command]
        self.log.info("job %s (queue %s, definition %s): %s", self.job_name, self.job_queue, self.job_definition, argv)
        self._run(argv, env)
        return self.job_name

    def _run(self, argv: list[str], env: dict[str, str]) -> None:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        tail: collections.deque[str] = collections.deque(maxlen=20)

        def pump_stderr() -> None:
            for line in proc.stderr:
                line = line.rstrip("\n")
                tail.append(line)
                self.log.info("[job stderr] %s", line)

        reader = threading.Thread(target=pump_stderr, daemon=True)
        reader.start()
        for line in proc.stdout:
            self.log.info("[job stdout] %s", line.rstrip("\n"))
        try:
            code = proc.wait(timeout=self.timeout_seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AirflowException(f"job {self.job_name} timed out after {self.timeout_seconds}s") from None
        reader.join(timeout=10)
        if code != 0:
            last = "\n".join(tail) or "(no stderr)"
            # The job's own input and data errors, a strategy at fault: a retry cannot help (Batch's
            # retry strategy says the same).
            error = AirflowFailException if code in PERMANENT_EXIT_CODES else AirflowException
            raise error(f"job {self.job_name} exited with code {code}; last stderr lines:\n{last}")
