"""Writing a large object past the page cache.

On these machines every fresh page-cache page costs a fault in the host (about 270 MiB/s for new memory against
20 GB/s for reused memory; docs/performance.md), and memory the kernel reclaims goes back to the host, so a backup
that writes its packs through the page cache pays that for every byte it stores, and pays it again in the syncfs.
Measured here on 655 MiB: buffered writes ran at 360 MiB/s into new memory (298 MiB/s with the fsync), ``O_DIRECT``
from a reused aligned buffer at 1170 MiB/s with the fsync. The data is copied into a page-aligned buffer of the
writing thread (a memcpy, at memory speed), written from there, and the unaligned tail goes through the page cache.
Durability is unchanged: the caller's fsync or syncfs still covers the file's metadata and the device's cache.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import threading

ALIGN = 4096                     # covers 512-byte and 4 KiB logical blocks
PIECE = 4 << 20                  # the per-thread buffer: 4 MiB of reused, page-aligned memory
_local = threading.local()


def _buffer() -> mmap.mmap:
    buf: mmap.mmap | None = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = mmap.mmap(-1, PIECE)       # anonymous maps are page-aligned
    return buf


def _aligned(view: memoryview) -> bool:
    """Whether ``view`` starts on a page: only writable memory can say (``from_buffer``), and read-only bytes are
    copied, as before."""
    if view.readonly:
        return False
    return ctypes.addressof(ctypes.c_char.from_buffer(view)) % mmap.PAGESIZE == 0


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write ``data`` at offset 0 of the new, empty file ``fd``: its aligned body with ``O_DIRECT`` where the
    filesystem takes it, the rest (and everything where it refuses: tmpfs, no /proc) through the page cache.
    A short direct write (a full disk) is finished through the page cache, which raises the real error."""
    with memoryview(data) as whole, whole.cast("B") as view:
        done = _direct(fd, view, len(view) // ALIGN * ALIGN)
        while done < len(view):
            done += os.pwrite(fd, view[done:], done)


def _direct(fd: int, view: memoryview, body: int) -> int:
    """How many bytes of ``view[:body]`` went to the device directly (a multiple of ALIGN, maybe 0)."""
    if body < ALIGN:
        return 0
    try:
        dfd = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return 0
    done = 0
    try:
        staging = None if _aligned(view) else memoryview(_buffer())
        piece = body if staging is None else PIECE
        while done < body:
            n = min(piece, body - done)
            src = view[done:done + n]
            if staging is not None:
                staging[:n] = src
                src = staging[:n]
            try:
                wrote = os.pwrite(dfd, src, done)
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                    return done          # opens with O_DIRECT but refuses such writes: the page cache
                raise
            done += wrote - wrote % ALIGN
            if wrote < n:
                return done
    finally:
        os.close(dfd)
    return done
