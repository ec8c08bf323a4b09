"""Fault injection for tests/test_faults.py: SIGKILL this process at an exact storage write.

Put this folder on PYTHONPATH and set BACKTEST_TEST_KILL=before:N (or after:N): the process
kills itself with SIGKILL right before (after) its N-th atomic file write, as a crash, an OOM
kill or a Spot interruption would, with no cleanup. Without the variable it does nothing.
"""

import os

_SPEC = os.environ.get("BACKTEST_TEST_KILL", "")
if _SPEC:
    import signal

    import backtest.data.storage as _storage

    _when, _, _n = _SPEC.partition(":")
    _target, _count = int(_n), [0]
    _original = _storage.write_bytes_atomic

    def _write_then_maybe_die(loc, data):
        _count[0] += 1
        if _when == "before" and _count[0] == _target:
            os.kill(os.getpid(), signal.SIGKILL)
        _original(loc, data)
        if _when == "after" and _count[0] == _target:
            os.kill(os.getpid(), signal.SIGKILL)

    _storage.write_bytes_atomic = _write_then_maybe_die
