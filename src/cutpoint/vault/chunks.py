"""Content-addressed chunk files: ``chunks/<2 hex>/<64 hex>``, one per distinct chunk content.

A chunk file is a 5-byte header (magic ``CPC1`` and a codec byte: 0 stored, 1 zstd) followed by the payload. A chunk
is written to a temporary name, fsynced and only then renamed into place, so a chunk file under its final name is
always whole: that is what lets a later backup trust ``exists`` for deduplication. Directory fsyncs are batched and
done before the manifest that references the chunks is written (see docs/design.md, write order).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import zstandard

from ..errors import IntegrityError, NotFoundError, VaultError
from .fsutil import fsync_dir

MAGIC = b"CPC1"
CODEC_STORED = 0
CODEC_ZSTD = 1


class ChunkStore:
    def __init__(self, root: Path, level: int = 3) -> None:
        self.root = root
        self.level = level
        self._dirty_dirs: set[Path] = set()

    @staticmethod
    def chunk_id(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def path(self, cid: str) -> Path:
        return self.root / cid[:2] / cid

    def has(self, cid: str) -> bool:
        return self.path(cid).exists()

    def put(self, data: bytes, cid: str | None = None) -> tuple[str, int]:
        """Store ``data`` unless a chunk with its content exists. Returns (id, bytes newly written)."""
        cid = cid or self.chunk_id(data)
        path = self.path(cid)
        if path.exists():
            return cid, 0
        blob = self.encode(data)
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise VaultError(f"cannot write chunk {cid[:12]} in {self.root}: {exc.strerror or exc}") from exc
        self._dirty_dirs.add(path.parent)
        return cid, len(blob)

    def encode(self, data: bytes) -> bytes:
        packed = zstandard.ZstdCompressor(level=self.level).compress(data)
        if len(packed) < len(data):
            return MAGIC + bytes([CODEC_ZSTD]) + packed
        return MAGIC + bytes([CODEC_STORED]) + data

    def get(self, cid: str) -> bytes:
        """Read, decode and check a chunk: damaged data raises ``IntegrityError``, never comes back."""
        try:
            blob = self.path(cid).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"chunk {cid} is missing from the vault ({self.path(cid)})") from None
        data = self.decode(cid, blob)
        if self.chunk_id(data) != cid:
            raise IntegrityError(f"chunk {cid} is damaged: its content does not match its hash")
        return data

    def decode(self, cid: str, blob: bytes) -> bytes:
        if blob[:4] != MAGIC or len(blob) < 5:
            raise IntegrityError(f"chunk {cid} is damaged: bad header")
        codec, payload = blob[4], blob[5:]
        if codec == CODEC_STORED:
            return payload
        if codec == CODEC_ZSTD:
            try:
                return zstandard.ZstdDecompressor().decompress(payload)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"chunk {cid} is damaged: {exc}") from exc
        raise IntegrityError(f"chunk {cid} is damaged: unknown codec {codec}")

    def flush(self) -> None:
        """Make the names of all chunks written so far durable (before a manifest may reference them)."""
        for d in sorted(self._dirty_dirs):
            fsync_dir(d)
        if self._dirty_dirs:
            fsync_dir(self.root)
        self._dirty_dirs.clear()
