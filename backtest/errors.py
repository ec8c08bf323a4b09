"""Errors the CLI reports as one line on stderr with a non-zero exit (never a traceback).

Exit codes: 2 invalid arguments, 3 missing or bad data (neither is worth a retry),
4 a storage or network I/O error (worth a retry), 1 an unexpected error (a bug: traceback).
"""


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
