"""One way to address files on S3 and on local disk: a URL in, a pyarrow filesystem out.

`s3://bucket/prefix` uses pyarrow's S3 filesystem (credentials from the usual AWS chain;
an S3-compatible endpoint from `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, which pyarrow
does not read by itself). `file:///path` and plain paths use the local filesystem.

Writes are atomic per file: a reader sees the old object or the new one, never half of one.
On S3 a PUT (or a completed multipart upload) is atomic already; on local disk we write a
hidden temporary file beside the target and rename it over the target. Files are read and
written as raw bytes (no decompression by file extension) and reads are bounded.

Locks on these files (`exclusive_lock`, leases) are `backtest.data.locks`'.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from backtest.errors import DataError

log = logging.getLogger("backtest.data.storage")

MAX_READ_BYTES = 256 * 2**20  # no candle, result or record file comes near this; /dev/zero would


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


def read_parquet_bytes(data: bytes, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file's table from its bytes, read on the calling thread.

    A thread-pool worker may otherwise still hold `data` when the process exits and abort it
    ("terminate called without an active exception", apache/arrow#34314).
    """
    import pyarrow.parquet as pq

    return pq.ParquetFile(pa.BufferReader(data)).read(columns=columns, use_threads=False)


def aws_region() -> str:
    """The region the AWS SDKs would use (pyarrow and boto3 are both given it explicitly)."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def s3_filesystem() -> pafs.S3FileSystem:
    """S3 filesystem honouring the endpoint variables the AWS SDKs use (pyarrow ignores them)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict = {"region": aws_region()}
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
        if parsed.netloc not in ("", "localhost"):
            raise DataError(f"file URL {url} names a host {parsed.netloc!r}: use file:///absolute/path or a plain path")
        path = os.path.abspath(parsed.path)
    elif parsed.scheme == "":
        path = os.path.abspath(url)
    else:
        raise DataError(f"unsupported storage URL scheme {parsed.scheme!r} in {url} (use s3:// or a path)")
    return Location(pafs.LocalFileSystem(), path, path)


def read_bytes(loc: Location, max_bytes: int = MAX_READ_BYTES) -> bytes | None:
    """The file's raw bytes, or None when it does not exist; DataError for a folder or a huge file."""
    try:
        with loc.fs.open_input_stream(loc.path, compression=None) as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:  # pyarrow maps S3 NoSuchKey to OSError on some versions
        if "NoSuchKey" in str(exc) or "does not exist" in str(exc) or "Path does not exist" in str(exc):
            return None
        if not loc.is_s3 and loc.fs.get_file_info(loc.path).type == pafs.FileType.Directory:
            raise DataError(f"{loc.url} is a folder, not a file") from None
        raise
    if len(data) > max_bytes:
        raise DataError(f"{loc.url} is larger than {max_bytes // 2**20} MiB: not a file this job reads")
    return data


def write_bytes_atomic(loc: Location, data: bytes) -> None:
    """Write a whole file so that readers see either the old content or the new, never a part."""
    parent = posixpath.dirname(loc.path)
    if loc.is_s3:
        with loc.fs.open_output_stream(loc.path, compression=None) as out:
            out.write(data)
        return
    make_local_dirs(loc.fs, parent, loc.url)
    tmp = posixpath.join(parent, f".{posixpath.basename(loc.path)}.tmp-{uuid.uuid4().hex}")
    try:
        with loc.fs.open_output_stream(tmp, compression=None) as out:
            out.write(data)
        loc.fs.move(tmp, loc.path)  # rename(2): atomic on POSIX
    except BaseException:
        with contextlib.suppress(OSError):
            loc.fs.delete_file(tmp)
        raise


def delete(loc: Location) -> None:
    """Remove one file if it is there (a missing one is no error): a retry's stale result or error."""
    if loc.fs.get_file_info(loc.path).type == pafs.FileType.File:
        loc.fs.delete_file(loc.path)


def make_local_dirs(fs: pafs.FileSystem, path: str, url: str) -> None:
    """Create a local folder and its parents. A file where a folder must be (`--results-url` naming
    a file) is a permanent error, DataError (exit 3), naming that file; a retry cannot fix it."""
    try:
        fs.create_dir(path, recursive=True)
    except (FileExistsError, NotADirectoryError):
        existing = path
        while not os.path.lexists(existing) and existing != os.path.dirname(existing):
            existing = os.path.dirname(existing)  # the deepest part of the path that exists
        blocker = existing if os.path.lexists(existing) and not os.path.isdir(existing) else path
        raise DataError(f"{blocker} is a file, not a folder: cannot write {url}") from None


def list_dir(loc: Location) -> list[str]:
    """Base names directly below `loc` (empty when it does not exist), in one listing call."""
    selector = pafs.FileSelector(loc.path, allow_not_found=True, recursive=False)
    return sorted(posixpath.basename(info.path) for info in loc.fs.get_file_info(selector))


# -- locks ------------------------------------------------------------------------------------
