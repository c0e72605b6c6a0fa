"""Content-addressed, write-once blob stores.

Job: keep the exact bytes of every received message and document under their sha256.
``FileBlobs`` writes temp -> fsync -> rename -> fsync(dir), so a blob that ``put`` returned
for survives a power cut; ``DatabaseBlobs`` stores bytes in the ``blob`` table, inside the
caller's transaction, so every node of a PostgreSQL installation reads every blob and a blob
is exactly as durable as the row that names it (no shared file system to trust).

Known limits: blobs are never deleted here (retention is a later, explicit operation);
``DatabaseBlobs`` suits invoice-sized data (a few MB), not gigabytes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import peewee as pw

from storage import models


class BlobMissing(KeyError):
    pass


class BlobCorrupt(Exception):
    pass


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Blobs(Protocol):
    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Make every (sha256, bytes) durable (files) or staged in the open transaction."""

    def get(self, sha256: str) -> bytes: ...

    def exists(self, sha256: str) -> bool: ...


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(directory: Path, final: Path, data: bytes, prefix: str = ".tmp-") -> None:
    """temp file in ``directory`` -> write -> fsync -> rename to ``final``. The caller fsyncs
    the directory (once for many files). Readers see no file or the whole file."""
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, final)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


class FileBlobs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)

    def path_of(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        dirty: set[Path] = set()
        for sha, data in items:
            final = self.path_of(sha)
            if final.exists():
                continue  # write-once: the same name always holds the same bytes
            final.parent.mkdir(exist_ok=True, mode=0o700)
            write_durably(self.tmp, final, data, prefix="in-")
            dirty.add(final.parent)
        for directory in dirty:
            fsync_dir(directory)

    def put(self, data: bytes) -> str:
        sha = sha256_hex(data)
        self.put_many([(sha, data)])
        return sha

    def get(self, sha256: str) -> bytes:
        try:
            data = self.path_of(sha256).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(sha256) from None
        if sha256_hex(data) != sha256:
            raise BlobCorrupt(f"blob {sha256} does not match its hash")
        return data

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).exists()


class DatabaseBlobs:
    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        for sha, data in items:
            (models.Blob.insert(sha256=sha, size=len(data), data=data)
             .on_conflict_ignore().execute())

    def put(self, data: bytes) -> str:
        sha = sha256_hex(data)
        self.put_many([(sha, data)])
        return sha

    def get(self, sha256: str) -> bytes:
        row = models.Blob.get_or_none(models.Blob.sha256 == sha256)
        if row is None:
            raise BlobMissing(sha256)
        data = bytes(row.data)
        if sha256_hex(data) != sha256:
            raise BlobCorrupt(f"blob {sha256} does not match its hash")
        return data

    def exists(self, sha256: str) -> bool:
        return bool(models.Blob.select(pw.SQL("1")).where(models.Blob.sha256 == sha256).exists())
