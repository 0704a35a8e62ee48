"""The fleecing overlay's file: an empty qcow2 image, written here rather than by ``qemu-img create``.

An empty qcow2 is four fixed pieces (docs/qcow2.txt in QEMU): the header, a one-cluster refcount table pointing at
one refcount block, that block counting the clusters in use, and an all-zero L1 table. ``qemu-img create`` writes
the same four, but as a process of its own: 10-15 ms per backup, paid with the monitor held, and CPU the backup needs
on a small host (docs/performance.md). The layout is qemu-img's (64 KiB clusters, 16-bit refcounts, version 3,
no feature name table, which is optional); ``tests/drivers/test_overlay.py`` holds it to ``qemu-img check``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS
L2_SPAN = CLUSTER // 8 * CLUSTER           # guest bytes one L1 entry maps: 8192 L2 entries of one cluster each
REFCOUNT_ORDER = 4                         # 16-bit refcounts
HEADER_LENGTH = 112                        # version 3 with the compression type byte (QEMU >= 5.1), padded to 8
# magic, version, backing file offset and size, cluster bits, size, encryption, L1 size and offset, refcount table
# offset and clusters, snapshots count and offset, incompatible, compatible and autoclear features, refcount order,
# header length, compression type
_HEADER = struct.Struct(">4sIQIIQIIQQIIQQQQIIB")
_REFCOUNTS_PER_BLOCK = CLUSTER * 8 // (1 << REFCOUNT_ORDER)


def create_qcow2(path: Path, size: int) -> None:
    """A new, empty qcow2 image of ``size`` bytes (rounded up to 512, as qemu-img does) at ``path``, which must not
    exist. Raises ``OSError`` as the filesystem does; nothing is left behind on failure."""
    size = -(-size // 512) * 512
    if size < 0:
        raise ValueError(f"a qcow2 image of {size} bytes")
    l1_size = -(-size // L2_SPAN)
    l1_clusters = -(-l1_size * 8 // CLUSTER)
    used = 3 + l1_clusters                 # header, refcount table, refcount block, L1 table (none for 0 bytes)
    if used > _REFCOUNTS_PER_BLOCK:
        raise ValueError(f"a qcow2 image of {size} bytes needs more than one refcount block")
    header = _HEADER.pack(b"QFI\xfb", 3, 0, 0, CLUSTER_BITS, size, 0, l1_size, 3 * CLUSTER if l1_size else 0,
                          CLUSTER, 1, 0, 0, 0, 0, 0, REFCOUNT_ORDER, HEADER_LENGTH, 0)
    header = header.ljust(HEADER_LENGTH, b"\0") + bytes(8)      # then the end of header extensions
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        _write_at(fd, header, 0)
        _write_at(fd, struct.pack(">Q", 2 * CLUSTER), CLUSTER)                 # refcount table -> its block
        _write_at(fd, struct.pack(f">{used}H", *([1] * used)), 2 * CLUSTER)    # every cluster above in use once
        os.ftruncate(fd, 3 * CLUSTER + l1_size * 8)                            # the L1 table: zeros, unallocated
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
