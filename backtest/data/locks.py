"""Exclusive locks on a store's files, as leases: on local disk `flock(2)`, on S3 a conditional
PUT of a lock object with a lease that a crashed holder's successor can take over (see
`exclusive_lock`). A refresh holds one per pair, so overlapping refreshes cannot lose candles.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import fcntl
import json
import logging
import os
import posixpath
import random
import threading
import time
from collections.abc import Iterator

from backtest.data.storage import Location, aws_region, make_local_dirs
from backtest.errors import DataError, StorageError

log = logging.getLogger("backtest.data.locks")

LOCK_LEASE_ENV = "BACKTEST_LOCK_LEASE_SECONDS"
LOCK_WAIT_ENV = "BACKTEST_LOCK_WAIT_SECONDS"
DEFAULT_LOCK_LEASE_SECONDS = 60.0
DEFAULT_LOCK_WAIT_SECONDS = 600.0
HTTP_DATE_RESOLUTION = 1.0  # seconds: S3's Last-Modified and Date headers


def _seconds_from_env(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e7:
        raise DataError(f"invalid {name}={text!r}: a positive number of seconds")
    return value


class Lease:
    """A held lock. `ensure_held()` raises StorageError once the lock may have passed to someone else."""

    def __init__(self, url: str):
        self.url = url

    def ensure_held(self) -> None:
        """Local locks cannot be lost (the kernel holds them for this process)."""


def _holder_body() -> bytes:
    now = time.time()
    return json.dumps({"owner": f"{os.uname().nodename}:{os.getpid()}", "acquired": now, "renewed": now}).encode()


def _describe_holder(body: bytes | None, age: float | None) -> str:
    """'host:pid (taken 75s ago, renewed 5s ago)' from a lock's body; whatever of it is readable."""
    try:
        record = json.loads(body or b"")
        owner, acquired = str(record["owner"]), float(record["acquired"])
    except (ValueError, KeyError, TypeError):
        return "an unknown holder" + (f" (lock written {age:.0f}s ago)" if age is not None else "")
    taken = f"taken {max(0.0, time.time() - acquired):.0f}s ago"
    return f"{owner} ({taken}" + (f", renewed {age:.0f}s ago)" if age is not None else ")")


@contextlib.contextmanager
def exclusive_lock(
    loc: Location, wait_seconds: float | None = None, lease_seconds: float | None = None
) -> Iterator[Lease]:
    """Hold an exclusive lock named by `loc` across processes and machines; yields its Lease.

    Local disk: `flock(2)` on the lock file (released by the kernel if the process dies); the
    holder writes its name into the file, for the waiters' messages.
    S3: a lease object created with a conditional PUT (`If-None-Match: *`), renewed every quarter
    lease by a heartbeat thread (a compare-and-swap PUT, `If-Match: <etag>`), so a crashed holder's
    lock expires `lease_seconds` (default 60, `BACKTEST_LOCK_LEASE_SECONDS`; plus one second, the
    resolution of the HTTP dates it is measured with) after its last renewal
    and is then taken over with another compare-and-swap PUT (two waiters cannot both win). Ages
    are measured on S3's clock (`Last-Modified` against the response's `Date`), not ours.

    Waiting longer than `wait_seconds` (default 600, `BACKTEST_LOCK_WAIT_SECONDS`) raises
    StorageError (exit 4: retryable) naming the holder and its age. Release is best-effort: a
    failure to release is logged, never raised over the block's own outcome or error.
    """
    wait = _seconds_from_env(LOCK_WAIT_ENV, DEFAULT_LOCK_WAIT_SECONDS) if wait_seconds is None else wait_seconds
    lease = _seconds_from_env(LOCK_LEASE_ENV, DEFAULT_LOCK_LEASE_SECONDS) if lease_seconds is None else lease_seconds
    if loc.is_s3:
        with _s3_lock(loc, wait, lease) as held:
            yield held
    else:
        with _local_lock(loc, wait) as held:
            yield held


@contextlib.contextmanager
def _local_lock(loc: Location, wait_seconds: float) -> Iterator[Lease]:
    make_local_dirs(loc.fs, posixpath.dirname(loc.path), loc.url)
    with open(loc.path, "a+b") as handle:
        deadline = time.monotonic() + wait_seconds
        delay = 0.02
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() > deadline:
                handle.seek(0)
                holder = _describe_holder(handle.read(4096), None)
                raise StorageError(f"could not lock {loc.url} within {wait_seconds:.0f}s: held by {holder}")
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)
        try:
            handle.truncate(0)
            handle.write(_holder_body())
            handle.flush()
            yield Lease(loc.url)
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)


def _s3_client():
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.client("s3", region_name=aws_region(), config=config)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


_CONFLICT = ("PreconditionFailed", "ConditionalRequestConflict")


class _S3Lease(Lease):
    """The lock object we hold, renewed by a heartbeat thread until released."""

    def __init__(self, client, bucket: str, key: str, etag: str, body: bytes, lease_seconds: float, url: str):
        super().__init__(url)
        self.client, self.bucket, self.key, self.etag = client, bucket, key, etag
        self.record = json.loads(body)
        self.lease_seconds = lease_seconds
        self.renewed = time.monotonic()
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name=f"lease {key}", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_seconds / 4):
            try:
                body = json.dumps({**self.record, "renewed": time.time()}).encode()
                reply = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfMatch=self.etag)
                self.etag, self.renewed = reply["ETag"], time.monotonic()
            except Exception as exc:
                if _error_code(exc) in (*_CONFLICT, "NoSuchKey"):
                    log.error("lost the lock %s: another process took it over", self.url)
                    self.lost = True
                    return
                log.warning("could not renew the lock %s (will retry): %s", self.url, exc)

    def ensure_held(self) -> None:
        # Renewals every quarter lease: three missed in a row and another may take it over soon.
        silent = time.monotonic() - self.renewed
        if self.lost or silent > 0.75 * self.lease_seconds:
            raise StorageError(f"lost the lock {self.url} (not renewed for {silent:.0f}s); nothing more is written")

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.lease_seconds)
        if self.lost:
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except Exception as exc:  # best-effort: the lease expires by itself
            log.warning(
                "could not release the lock %s (it expires within %.0fs): %s", self.url, self.lease_seconds, exc
            )


@contextlib.contextmanager
def _s3_lock(loc: Location, wait_seconds: float, lease_seconds: float) -> Iterator[Lease]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = loc.path.partition("/")
    client = _s3_client()
    deadline = time.monotonic() + wait_seconds
    delay = 0.05
    try:
        while True:
            body = _holder_body()
            try:
                etag = client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")["ETag"]
                break
            except ClientError as exc:
                if _error_code(exc) not in _CONFLICT:
                    raise
            etag, holder = _take_over_stale(client, bucket, key, body, lease_seconds, loc.url)
            if etag:
                break
            if time.monotonic() > deadline:
                raise StorageError(f"could not lock {loc.url} within {wait_seconds:.0f}s: held by {holder}")
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(f"could not lock {loc.url}: {' '.join(str(exc).split())}") from None
    held = _S3Lease(client, bucket, key, etag, body, lease_seconds, loc.url)
    try:
        yield held
    finally:
        held.release()


def _take_over_stale(
    client, bucket: str, key: str, body: bytes, lease_seconds: float, url: str
) -> tuple[str | None, str]:
    """(new etag, '') when the lock was stale and is ours now; else (None, who holds it)."""
    from botocore.exceptions import ClientError

    try:
        current = client.get_object(Bucket=bucket, Key=key)
        holder_body = current["Body"].read(4096)
    except ClientError as exc:
        if _error_code(exc) in ("NoSuchKey", "404"):
            return None, "nobody (released meanwhile)"  # the next conditional PUT will tell
        raise
    server_now = _server_time(current) or time.time()
    age = server_now - current["LastModified"].timestamp()
    holder = _describe_holder(holder_body, age)
    if age <= lease_seconds + HTTP_DATE_RESOLUTION:  # both dates are whole seconds: the age may read 1 s high
        return None, holder
    log.warning("taking over the lock %s: its lease ran out (%s)", url, holder)
    try:
        return client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=current["ETag"])["ETag"], ""
    except ClientError as exc:
        if _error_code(exc) in (*_CONFLICT, "NoSuchKey"):
            return None, holder  # another waiter won
        raise


def _server_time(response: dict) -> float | None:
    """S3's clock, from the response's Date header (second resolution)."""
    value = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() if value else None
    except (TypeError, ValueError):
        return None
