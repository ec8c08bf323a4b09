"""One way to address files on S3 and on local disk: a URL in, a pyarrow filesystem out.

`s3://bucket/prefix` uses pyarrow's S3 filesystem (credentials from the usual AWS chain;
an S3-compatible endpoint from `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, which pyarrow
does not read by itself). `file:///path` and plain paths use the local filesystem.

Writes are atomic per file: a reader sees the old object or the new one, never half of one.
On S3 a PUT (or a completed multipart upload) is atomic already; on local disk we write a
hidden temporary file beside the target and rename it over the target.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import posixpath
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.fs as pafs

from backtest.errors import DataError

log = logging.getLogger("backtest.storage")


@dataclass(frozen=True)
class Location:
    """A filesystem plus a path inside it, with the URL it came from."""

    fs: pafs.FileSystem
    path: str
    url: str

    def join(self, *parts: str) -> Location:
        path = posixpath.join(self.path, *parts)
        url = self.url.rstrip("/") + "/" + "/".join(parts)
        return Location(self.fs, path, url)

    @property
    def is_s3(self) -> bool:
        return isinstance(self.fs, pafs.S3FileSystem)


def s3_filesystem() -> pafs.S3FileSystem:
    """S3 filesystem honouring the endpoint variables the AWS SDKs use (pyarrow ignores them)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    kwargs: dict = {"region": region}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
        kwargs["force_virtual_addressing"] = False
    return pafs.S3FileSystem(**kwargs)


def resolve(url: str) -> Location:
    """Turn `s3://bucket/key`, `file:///abs/path` or a plain path into a Location."""
    if not url:
        raise DataError("empty storage URL")
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise DataError(f"S3 URL has no bucket: {url}")
        path = (parsed.netloc + "/" + parsed.path.lstrip("/")).rstrip("/")
        return Location(s3_filesystem(), path, url.rstrip("/"))
    if parsed.scheme == "file":
        path = os.path.abspath(parsed.path)
    elif parsed.scheme == "":
        path = os.path.abspath(url)
    else:
        raise DataError(f"unsupported storage URL scheme {parsed.scheme!r} in {url} (use s3:// or a path)")
    return Location(pafs.LocalFileSystem(), path, path)


def read_bytes(loc: Location) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    try:
        with loc.fs.open_input_stream(loc.path) as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:  # pyarrow maps S3 NoSuchKey to OSError on some versions
        if "NoSuchKey" in str(exc) or "does not exist" in str(exc) or "Path does not exist" in str(exc):
            return None
        raise


def write_bytes_atomic(loc: Location, data: bytes) -> None:
    """Write a whole file so that readers see either the old content or the new, never a part."""
    parent = posixpath.dirname(loc.path)
    if loc.is_s3:
        with loc.fs.open_output_stream(loc.path) as out:
            out.write(data)
        return
    loc.fs.create_dir(parent, recursive=True)
    tmp = posixpath.join(parent, f".{posixpath.basename(loc.path)}.tmp-{uuid.uuid4().hex}")
    try:
        with loc.fs.open_output_stream(tmp) as out:
            out.write(data)
        loc.fs.move(tmp, loc.path)  # rename(2): atomic on POSIX
    except BaseException:
        with contextlib.suppress(OSError):
            loc.fs.delete_file(tmp)
        raise


def list_dir(loc: Location) -> list[str]:
    """Base names directly below `loc` (empty when it does not exist), in one listing call."""
    selector = pafs.FileSelector(loc.path, allow_not_found=True, recursive=False)
    return sorted(posixpath.basename(info.path) for info in loc.fs.get_file_info(selector))


@contextlib.contextmanager
def exclusive_lock(loc: Location, wait_seconds: float = 600.0, lease_seconds: float = 900.0) -> Iterator[None]:
    """Hold an exclusive lock named by `loc` across processes and machines.

    Local disk: `flock(2)` on the lock file (released by the kernel if the process dies).
    S3: a lock object created with a conditional PUT (`If-None-Match: *`); a lock left behind
    by a crashed holder is taken over after `lease_seconds` with a compare-and-swap PUT
    (`If-Match: <etag>`), so that two waiters cannot both take it.
    """
    if not loc.is_s3:
        loc.fs.create_dir(posixpath.dirname(loc.path), recursive=True)
        with open(loc.path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    with _s3_lock(loc, wait_seconds, lease_seconds):
        yield


@contextlib.contextmanager
def _s3_lock(loc: Location, wait_seconds: float, lease_seconds: float) -> Iterator[None]:
    import boto3
    from botocore.exceptions import ClientError

    bucket, _, key = loc.path.partition("/")
    client = boto3.client(
        "s3", region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    )
    body = json.dumps({"owner": f"{os.uname().nodename}:{os.getpid()}", "acquired": time.time()}).encode()
    deadline = time.monotonic() + wait_seconds
    delay = 0.05
    while True:
        try:
            client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
            break
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
        if _take_over_stale(client, bucket, key, body, lease_seconds):
            break
        if time.monotonic() > deadline:
            raise DataError(f"could not lock {loc.url} within {wait_seconds:.0f}s: another refresh holds it")
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 2.0)
    try:
        yield
    finally:
        client.delete_object(Bucket=bucket, Key=key)


def _take_over_stale(client, bucket: str, key: str, body: bytes, lease_seconds: float) -> bool:
    from botocore.exceptions import ClientError

    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False  # released meanwhile: the next conditional PUT will tell
    age = time.time() - head["LastModified"].timestamp()
    if age < lease_seconds:
        return False
    log.warning("taking over stale lock s3://%s/%s (%.0fs old)", bucket, key, age)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=head["ETag"])
        return True
    except ClientError:
        return False
