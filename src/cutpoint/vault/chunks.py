"""Content-addressed chunk files: ``chunks/<2 hex>/<64 hex>``, one per distinct chunk content.

A chunk file is a sealed blob (``vault/crypto.py``, magic ``CPC2``) whose payload is a codec byte (0 stored, 1 zstd)
and the data; its id is the SHA-256 of the data, or an HMAC-SHA256 under the vault's id key when encrypted. A chunk
is written to a temporary name, fsynced and only then renamed into place, so a file under its final name is always
whole: that is what lets a later backup trust ``exists`` for deduplication. Directory fsyncs are batched and done
before the manifest that references the chunks is written (docs/format.md §12, write order), for the directories of
chunks found already present too: another backup may have renamed such a chunk in and not yet fsynced its directory.
A chunk's zstd frame is untrusted: it is decompressed with the vault's chunk size as a bound (``codec.py``).

Garbage collection runs while backups write (docs/format.md §15). Two things make that safe here: a backup that finds
a chunk already present *touches* it (``utime``), so a chunk a running backup relies on is young and gc leaves it;
and the check-and-touch (or rename into place) happens under a shared ``flock`` on the chunk's directory, which gc
holds exclusively while it decides on and deletes files in that directory. A chunk can therefore never be deleted
between a writer's "it exists" and its touch.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import zstandard

from .. import faults
from ..errors import IntegrityError, NotFoundError, VaultError
from . import codec as codec_mod
from .crypto import Sealer
from .fsutil import fsync_dir

MAGIC = b"CPC2"
CODEC_STORED = 0
CODEC_ZSTD = 1
BAD_SUFFIX = ".bad"
_ID = re.compile(r"[0-9a-f]{64}")


class ChunkStore:
    def __init__(self, root: Path, sealer: Sealer, level: int = 1,  # level 1: ~2.4x faster than 3, 10% larger (bench)
                 max_size: int = 64 << 20) -> None:
        self.root = root
        self.max_size = max_size            # no chunk holds more: the vault's chunk size bounds decompression
        self.sealer = sealer
        self.level = level
        self._dirty_dirs: set[Path] = set()

    def chunk_id(self, data: bytes) -> str:
        return self.sealer.chunk_id(data)

    def path(self, cid: str) -> Path:
        if not _ID.fullmatch(cid):
            raise IntegrityError(f"{cid!r} is not a chunk id (damaged manifest)")
        return self.root / cid[:2] / cid

    def has(self, cid: str) -> bool:
        return self.path(cid).exists()

    def state(self, cid: str) -> str:
        path = self.path(cid)
        return "ok" if path.exists() else "bad" if path.with_name(cid + BAD_SUFFIX).exists() else "missing"

    def stored_size(self, cid: str) -> int:
        try:
            return self.path(cid).stat().st_size
        except FileNotFoundError:
            return 0

    @contextmanager
    def dir_lock(self, d: Path, *, exclusive: bool = False) -> Iterator[None]:
        """``flock`` on a chunk directory: shared for writers, exclusive for gc's sweep of it."""
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def put(self, data: bytes, cid: str | None = None) -> tuple[str, int]:
        """Store ``data`` unless a chunk with its content exists (then touch it). Returns (id, bytes written)."""
        cid = cid or self.chunk_id(data)
        path = self.path(cid)
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            with self.dir_lock(path.parent):
                if _touch(path):
                    # a dedup hit: a concurrent backup may have renamed it in without fsyncing the directory yet;
                    # our manifest must not be durable before that name is
                    self._dirty_dirs.add(path.parent)
                    return cid, 0
            blob = self.encode(cid, data)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        except OSError as exc:
            raise VaultError(f"cannot write chunk {cid[:12]} in {self.root}: {exc.strerror or exc}") from exc
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob[:len(blob) // 2])
                f.flush()
                faults.hit("chunk-write")
                f.write(blob[len(blob) // 2:])
                f.flush()
                os.fsync(f.fileno())
            with self.dir_lock(path.parent):
                if not _publish(tmp, path):     # another writer stored the same content meanwhile
                    os.unlink(tmp)
                    _touch(path)
                    self._dirty_dirs.add(path.parent)
                    return cid, 0
        except OSError as exc:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise VaultError(f"cannot write chunk {cid[:12]} in {self.root}: {exc.strerror or exc}") from exc
        self._dirty_dirs.add(path.parent)
        return cid, len(blob)

    def encode(self, cid: str, data: bytes) -> bytes:
        packed = zstandard.ZstdCompressor(level=self.level).compress(data)
        payload = bytes([CODEC_ZSTD]) + packed if len(packed) < len(data) else bytes([CODEC_STORED]) + data
        return self.sealer.seal(MAGIC, payload, cid.encode())

    def get(self, cid: str, expect: int | None = None) -> bytes:
        """Read, authenticate, decode and check a chunk: damaged data raises ``IntegrityError``, never comes back.
        ``expect``: the length the reference needs; it then also bounds decompression, and a mismatch is damage."""
        path = self.path(cid)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            if path.with_name(cid + BAD_SUFFIX).exists():
                raise IntegrityError(f"chunk {cid} is damaged (moved aside by an earlier verify)") from None
            raise NotFoundError(f"chunk {cid} is missing from the vault ({path})") from None
        except OSError as exc:       # an I/O or permission error says nothing about the data: not moved aside
            raise VaultError(f"chunk {cid} cannot be read: {exc.strerror or exc}") from exc
        data = self.decode(cid, blob, expect)
        if expect is not None and len(data) != expect:
            raise IntegrityError(f"chunk {cid} has {len(data)} bytes where {expect} are expected")
        if self.chunk_id(data) != cid:
            raise IntegrityError(f"chunk {cid} is damaged: its content does not match its id")
        return data

    def get_many(self, cids: list[str], expects: list[int]) -> list[bytes]:
        return [self.get(c, e) for c, e in zip(cids, expects)]

    def decode(self, cid: str, blob: bytes, expect: int | None = None) -> bytes:
        limit = self.max_size if expect is None else min(expect, self.max_size)
        payload = self.sealer.unseal(MAGIC, blob, cid.encode(), f"chunk {cid}")
        if not payload:
            raise IntegrityError(f"chunk {cid} is damaged: empty payload")
        codec, body = payload[0], memoryview(payload)[1:]
        if codec == CODEC_STORED:
            if len(body) > limit:
                raise IntegrityError(f"chunk {cid} is damaged: {len(body)} bytes, more than a chunk holds")
            return bytes(body)
        if codec == CODEC_ZSTD:
            return codec_mod.decompress(body, limit, f"chunk {cid}")
        raise IntegrityError(f"chunk {cid} is damaged: unknown codec {codec}")

    def mark_bad(self, cid: str) -> bool:
        """Move a damaged chunk aside (``<id>.bad``), so the next backup that meets its content stores it afresh
        instead of deduplicating against the damaged copy. Returns whether a file was moved."""
        path = self.path(cid)
        try:
            os.replace(path, path.with_name(cid + BAD_SUFFIX))
        except FileNotFoundError:
            return False
        return True

    def flush(self) -> None:
        """Make the names of all chunks written so far durable (before a manifest may reference them)."""
        for d in sorted(self._dirty_dirs):
            fsync_dir(d)
        if self._dirty_dirs:
            fsync_dir(self.root)
        self._dirty_dirs.clear()

    def directories(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.is_dir() and len(p.name) == 2) if self.root.exists() else []


def is_chunk_name(name: str) -> bool:
    return bool(_ID.fullmatch(name))


def _publish(tmp: str, path: Path) -> bool:
    """Give the written chunk its name, unless a chunk of that name exists: False then. A hard link is created
    atomically or not at all, so two writers of the same content (the disks of one backup, or two backups: the
    directory lock is shared between writers) cannot both count it as stored, which a check followed by a rename
    let them do. A filesystem without hard links gets the check and the rename."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        if path.exists():
            return False
        os.replace(tmp, path)
        return True
    os.unlink(tmp)
    return True


def _touch(path: Path) -> bool:
    """Mark an existing chunk as used now (gc's age rule); False if it does not exist."""
    try:
        os.utime(path)
        return True
    except FileNotFoundError:
        return False
