"""Errors the CLI reports as one line on stderr with a non-zero exit (never a traceback), and
the one home of the job's exit codes and of which of them a retry cannot fix.

| exit | meaning                                   | retried (Airflow, Batch) |
|------|-------------------------------------------|--------------------------|
| 0    | ok                                        |                          |
| 1    | unexpected error (a bug: traceback)       | yes                      |
| 2    | invalid arguments                         | no                       |
| 3    | missing or bad data                       | no                       |
| 4    | storage, network or source I/O, just now  | yes                      |
| 5    | the strategy is at fault (see below)      | no                       |
| 141  | stdout's reader left early (piped to `head`) | - (a job's stdout is its log) |

Exit 5, the strategy is at fault, whatever it did: it fails the look-ahead check, raises (any
exception) or exits in its code, returns anything but one bool signal per combination and bar,
writes to its (read-only) candles, declares a warm-up or lookback that is not a whole number of
bars >= 0, or its module fails to import. Always one line naming the strategy (and its file)
and what it did (`StrategyError`). A built-in strategy raising is a bug of ours: exit 1.

The Batch job definition's retry strategy (infra/backtest-stack.yaml) says the same in its own terms.
"""

from __future__ import annotations

import errno

EXIT_BUG = 1
EXIT_INPUT = 2
EXIT_DATA = 3
EXIT_IO = 4
EXIT_STRATEGY = 5  # the strategy is at fault: it looks ahead, raises, returns bad signals, ...
EXIT_STDOUT_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader left
EXIT_CHECK = EXIT_STRATEGY  # `check-strategy`'s verdict on a strategy that looks ahead: the same code
# Failures a retry cannot fix: the local runner and the refresh task fail at once on these.
PERMANENT_EXIT_CODES = frozenset({EXIT_INPUT, EXIT_DATA, EXIT_STRATEGY})


class BacktestError(Exception):
    """Base class: a problem the user can fix, reported as one line."""

    exit_code = EXIT_BUG

    @property
    def permanent(self) -> bool:
        """Whether retrying the same command can only fail the same way."""
        return self.exit_code in PERMANENT_EXIT_CODES


class InputError(BacktestError):
    """Bad arguments: an invalid symbol, window, fee or time."""

    exit_code = EXIT_INPUT


class StrategyError(InputError):
    """The strategy is at fault (its code raised, exited, returned bad signals, wrote to its
    candles or declared a bad warm-up): one line naming it and what it did.

    An InputError (the user's to fix, never retried: the DAG's form and plan handle it as one)
    with its own exit code."""

    exit_code = EXIT_STRATEGY


class DataError(BacktestError):
    """Missing, malformed or insufficient candles or storage locations."""

    exit_code = EXIT_DATA


class RetryableError(BacktestError):
    """Something outside the job failed just now: the same command may succeed later."""

    exit_code = EXIT_IO


class SourceUnavailable(RetryableError):
    """The data source did not answer usefully within the attempt budget."""


class StorageError(RetryableError):
    """The store could not be read or written just now (network, S3 outage, disk full, a busy lock)."""


# OS errors a retry cannot fix: the path itself is wrong or may not be touched.
_PERMANENT_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP}
)


def from_os_error(exc: OSError) -> BacktestError:
    """The one place an OSError becomes an exit code: permanent (3) or retryable I/O (4)."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, PermissionError | IsADirectoryError | NotADirectoryError) or exc.errno in _PERMANENT_ERRNOS:
        return DataError(f"storage refused the operation: {message}")
    return StorageError(f"storage or network I/O failed: {message}")
