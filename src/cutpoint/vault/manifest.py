"""A restore point's manifest: ``points/<vm>/<point>.manifest``, the complete recipe of every disk at the cut.

Each disk lists one entry per fixed-size chunk of its address space: a chunk id, or ``null`` for a chunk that reads
as all zeros (never stored). Every point is thus a complete image, however it was read (full or incremental).

On disk the JSON is zstd-compressed and sealed (``vault/crypto.py``, magic ``CPM2``) with ``<vm>/<point>`` as
associated data: encrypted and authenticated in an encrypted vault, checksummed in a plain one. A manifest that is
truncated, altered, or copied under another point's name fails to open instead of describing the wrong disks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from ..errors import IntegrityError
from .codec import decompress
from .crypto import Sealer

FORMAT = 2
FORMAT_TREE = 3          # format v4 vaults: each disk's chunk list is an index tree (vault/tree.py)
FORMAT_DELTA = 4         # the same, and the tree's nodes may be deltas over the parent point's (docs/format.md §18.5)
TREE_FORMATS = (FORMAT_TREE, FORMAT_DELTA)
FORMATS = (FORMAT, FORMAT_TREE, FORMAT_DELTA)
MAGIC = b"CPM2"
MAX_MANIFEST = 1 << 30        # decompressed: ~16 million chunk entries, 64 TiB of disk at 4 MiB chunks


@dataclass
class DiskManifest:
    name: str
    size: int
    chunks: Sequence[str | None]          # format 3: a ChunkTree over ``tree``, attached by Vault.manifest
    node: str = ""
    driver: str = ""
    filename: str = ""
    cache: dict[str, bool] = field(default_factory=dict)
    read_bytes: int = 0
    stored_bytes: int = 0
    dirty_bytes: int | None = None
    tree: str | None = None               # format 3: root node id (hex), None for an all-zero disk
    tree_height: int = 0
    index_bytes: int = 0                  # format 3: bytes of index nodes this point wrote for the disk


@dataclass
class Manifest:
    point: str
    vm: str
    created: str
    chunk_size: int
    disks: list[DiskManifest]
    consistency: str = "crash"
    requested: str = "crash"
    fallback_reason: str | None = None
    pause_ms: float = 0.0
    frozen_ms: float | None = None
    mode: str = "full"
    full_reason: str | None = None
    parent: str | None = None
    warnings: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    vm_config: dict[str, Any] | None = None   # what it takes to start the VM again (driver's capture_config)
    key_fingerprint: str | None = None
    format: int = FORMAT
    fanout: int = 0                       # format 3: entries per index node

    def to_bytes(self) -> bytes:
        chunks = [d.chunks for d in self.disks]
        try:
            if self.format in TREE_FORMATS:
                for d in self.disks:
                    d.chunks = []
            doc = asdict(self)
        finally:
            for d, c in zip(self.disks, chunks):
                d.chunks = c
        if self.format in TREE_FORMATS:
            for d in doc["disks"]:
                del d["chunks"]
        else:
            doc.pop("fanout")
            for d in doc["disks"]:
                for k in ("tree", "tree_height", "index_bytes"):
                    del d[k]
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "manifest") -> "Manifest":
        try:
            raw: dict[str, Any] = json.loads(data)
            if raw.get("format") in TREE_FORMATS:
                for d in raw["disks"]:
                    if "chunks" in d:
                        raise TypeError("a disk of a tree format lists chunks")
                    d["chunks"] = []
            disks = [DiskManifest(**d) for d in raw.pop("disks")]
            m = cls(disks=disks, **raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise IntegrityError(f"{where} is damaged or truncated: {exc}") from exc
        if m.format not in FORMATS:
            raise IntegrityError(f"{where} has format {m.format}; this cutpoint reads formats "
                                 f"{', '.join(map(str, FORMATS))}")
        return m

    def check_shape(self, where: str) -> None:
        """A chunk size in range and one entry per chunk of each disk: a manifest that disagrees with itself is
        damaged, never padded or cut to fit (an incremental reuses these lists as they are)."""
        cs = self.chunk_size
        if not isinstance(cs, int) or isinstance(cs, bool) or not 4096 <= cs <= 1 << 30 or cs & (cs - 1):
            raise IntegrityError(f"{where} is damaged: chunk size {cs!r}")
        if self.format in TREE_FORMATS:
            for d in self.disks:
                ok = (isinstance(d.size, int) and d.size >= 0 and isinstance(d.tree_height, int)
                      and (d.tree is None or (isinstance(d.tree, str) and len(d.tree) == 64)))
                if not ok or not isinstance(self.fanout, int) or not 2 <= self.fanout <= 1 << 16:
                    raise IntegrityError(f"{where} is damaged: disk {d.name} has no well-formed index tree")
            return
        for d in self.disks:
            n = -(-d.size // cs) if isinstance(d.size, int) and d.size >= 0 else -1
            if not isinstance(d.chunks, list) or len(d.chunks) != n:
                count = len(d.chunks) if isinstance(d.chunks, list) else d.chunks
                raise IntegrityError(f"{where} is damaged: disk {d.name} lists {count} chunks for {n}")

    def referenced(self) -> set[str]:
        """Chunk ids (format 2; on format 3 this reads every leaf: gc uses the trees' own walk)."""
        return {c for d in self.disks for c in d.chunks if c}

    def seal(self, sealer: Sealer) -> bytes:
        self.key_fingerprint = sealer.fingerprint
        return sealer.seal(MAGIC, zstandard.ZstdCompressor().compress(self.to_bytes()), _aad(self.vm, self.point))

    @classmethod
    def unseal(cls, sealer: Sealer, blob: bytes, vm: str, point: str, where: str) -> "Manifest":
        packed = sealer.unseal(MAGIC, blob, _aad(vm, point), where)
        m = cls.from_bytes(decompress(packed, MAX_MANIFEST, where), where)
        m.check_shape(where)
        if (m.vm, m.point) != (vm, point):
            raise IntegrityError(f"{where} describes point {m.point} of VM {m.vm!r} instead")
        if m.key_fingerprint != sealer.fingerprint:
            raise IntegrityError(f"{where} names key {m.key_fingerprint}, not this vault's key {sealer.fingerprint}")
        return m


def _aad(vm: str, point: str) -> bytes:
    return f"{vm}/{point}".encode()


def manifest_path(root: Path, vm: str, point: str) -> Path:
    return root / "points" / vm / f"{point}.manifest"
