"""Errors the CLI reports as one line on stderr with a non-zero exit (never a traceback).

Exit codes: 2 invalid arguments, 3 missing or bad data (neither is worth a retry),
4 a storage or network I/O error (worth a retry), 1 an unexpected error (a bug: traceback).
"""

from __future__ import annotations

import errno


class BacktestError(Exception):
    """Base class: a problem the user can fix, reported as one line."""

    exit_code = 1


class InputError(BacktestError):
    """Bad arguments: an invalid symbol, window, fee or time."""

    exit_code = 2


class DataError(BacktestError):
    """Missing, malformed or insufficient candles or storage locations."""

    exit_code = 3


class SourceUnavailable(DataError):
    """The data source did not answer usefully within the attempt budget: worth a later retry."""

    exit_code = 4


class StorageError(BacktestError):
    """The store could not be read or written just now (network, S3 outage, disk full, a busy lock): worth a retry."""

    exit_code = 4


# OS errors a retry cannot fix: the path itself is wrong or may not be touched.
_PERMANENT_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP}
)


def from_os_error(exc: OSError) -> BacktestError:
    """The one place an OSError becomes an exit code: permanent (3) or retryable I/O (4)."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, PermissionError | IsADirectoryError | NotADirectoryError) or exc.errno in _PERMANENT_ERRNOS:
        return DataError(f"storage refused the operation: {message}")
    return StorageError(f"storage or network I/O failed: {message}")
