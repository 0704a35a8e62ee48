"""Turning one frozen disk into a list of chunk ids, reading from the VM only what is needed.

A chunk that ``base:allocation`` reports entirely zero is recorded as ``None`` without being read. On an incremental,
a chunk no dirty extent touches keeps the previous point's id unread; a chunk partly dirty is rebuilt from the
previous point's chunk (read from the vault) with only the dirty ranges read from the VM, so the bytes read from the
VM follow the bitmap's granularity, not the chunk size. A previous chunk that is no longer in the vault (moved aside
by verify as damaged) is never inherited: that chunk is read whole from the VM, so the new point is complete.
Hashing and compression run on worker threads (both release the GIL) while the next chunk is read, with a bounded
number of chunks in flight to keep memory flat.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import IntegrityError
from ..reader.export import Extent, ExportReader
from ..vault.chunks import ChunkStore

WORKERS = 4        # hash+compress+write threads: fsync and zlib-free waits overlap on 2 cores (bench)
IN_FLIGHT = 8      # chunks queued at once: bounds memory to ~2 x 8 x chunk size
Progress = Callable[[str, int, int], None]   # (disk, bytes done, bytes total)


@dataclass
class DiskResult:
    chunks: list[str | None]
    read_bytes: int
    stored_bytes: int
    dirty_bytes: int | None


def _covered(extents: list[Extent], chunk_size: int, size: int) -> set[int]:
    """Indices of chunks that lie entirely inside the given extents."""
    full: set[int] = set()
    for e in extents:
        first = -(-e.offset // chunk_size)
        last = (e.offset + e.length) // chunk_size          # exclusive
        for i in range(first, last):
            full.add(i)
        # a short final chunk is covered if the extent reaches the disk's end
        if e.offset + e.length >= size and (size % chunk_size) and e.offset <= (size // chunk_size) * chunk_size:
            full.add(size // chunk_size)
    return full


def _touched(extents: list[Extent], chunk_size: int) -> dict[int, list[tuple[int, int]]]:
    """Chunk index → dirty (offset, length) ranges inside it."""
    out: dict[int, list[tuple[int, int]]] = {}
    for e in extents:
        pos, end = e.offset, e.offset + e.length
        while pos < end:
            i = pos // chunk_size
            stop = min(end, (i + 1) * chunk_size)
            out.setdefault(i, []).append((pos, stop - pos))
            pos = stop
    return out


def read_disk(reader: ExportReader, name: str, size: int, chunk_size: int, store: ChunkStore, *,
              prev_chunks: list[str | None] | None = None, progress: Progress | None = None,
              pool: ThreadPoolExecutor | None = None) -> DiskResult:
    n = -(-size // chunk_size)
    zero = _covered(reader.zero_extents(), chunk_size, size)
    dirty: dict[int, list[tuple[int, int]]] | None = None
    dirty_bytes: int | None = None
    if prev_chunks is not None:
        extents = reader.dirty_extents()
        dirty_bytes = sum(e.length for e in extents)
        dirty = _touched(extents, chunk_size)

    chunks: list[str | None] = [None] * n
    read_bytes = stored = 0
    own_pool = pool is None
    pool = pool or ThreadPoolExecutor(max_workers=WORKERS)
    pending: deque[tuple[int, Future[tuple[str | None, int, int]]]] = deque()

    def drain(limit: int) -> None:
        nonlocal stored, read_bytes
        while len(pending) > limit:
            i, fut = pending.popleft()
            chunks[i], written, nread = fut.result()
            stored += written
            read_bytes += nread

    try:
        for i in range(n):
            off = i * chunk_size
            length = min(chunk_size, size - off)
            prev = prev_chunks[i] if prev_chunks is not None else None
            lost = prev is not None and i not in zero and not store.has(prev)
            if lost:
                prev = None             # moved aside by verify (or lost): read the chunk whole, store it afresh
            if i in zero:
                chunks[i] = None
            elif dirty is not None and i not in dirty and not lost:
                chunks[i] = prev
            else:
                part = dirty.get(i) if dirty is not None and not lost else None
                ranges = part if part and _partial(part, length) else None
                pending.append((i, pool.submit(_chunk, store, reader, off, length, prev, ranges)))
                drain(IN_FLIGHT)
            if progress:
                progress(name, min(off + length, size), size)
        drain(0)
    finally:
        for _, fut in pending:
            fut.cancel()
        if own_pool:
            pool.shutdown(wait=True)
    return DiskResult(chunks, read_bytes, stored, dirty_bytes)


def _chunk(store: ChunkStore, reader: ExportReader, off: int, length: int, prev: str | None,
           ranges: list[tuple[int, int]] | None) -> tuple[str | None, int, int]:
    """One chunk, on a worker thread: read it (whole, or only its dirty ranges on top of the previous version),
    then hash, compress and store it. Returns (id or None for zeros, bytes stored, bytes read from the VM)."""
    if ranges is None:
        data = reader.pread(off, length)
        nread = length
    else:
        data = _patch(store, prev, length, off, ranges, reader)
        nread = sum(r for _, r in ranges)
    res = _store(store, data)
    return (None, 0, nread) if res is None else (res[0], res[1], nread)


def _partial(ranges: list[tuple[int, int]], length: int) -> bool:
    return sum(r for _, r in ranges) < length


def _patch(store: ChunkStore, prev: str | None, length: int, base: int, ranges: list[tuple[int, int]],
           reader: ExportReader) -> bytes:
    buf = bytearray(store.get(prev) if prev else bytes(length))
    if len(buf) != length:       # the caller reads in full on any size change: a mismatch is damage, never padded
        raise IntegrityError(f"chunk {prev} of the previous point has {len(buf)} bytes where {length} are expected; "
                             "run 'cutpoint verify --read-data', then back up with --full")
    for off, ln in ranges:
        buf[off - base: off - base + ln] = reader.pread(off, ln)
    return bytes(buf)


_ZERO_CACHE: dict[int, bytes] = {}


def _store(store: ChunkStore, data: bytes) -> tuple[str, int] | None:
    zero = _ZERO_CACHE.get(len(data))
    if zero is None:
        zero = _ZERO_CACHE.setdefault(len(data), bytes(len(data)))
    if data == zero:
        return None
    return store.put(data)
