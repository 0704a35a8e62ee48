"""Random access to one disk of a restore point, straight from the vault's chunks.

This is what every restore path that must not restore a whole disk reads through: the NBD server behind file-level
recovery, mounts and instant restore. A read touches only the chunks it overlaps; a ``null`` chunk reads as zeros
without touching the vault. Decoded chunks are kept in a small LRU cache, because filesystem tools and guests read in
4 KiB-64 KiB pieces while a v3 chunk is 4 MiB: without it, every small read would decode and authenticate a whole
chunk. A read spanning several chunks fetches them together (format v4 keeps a run of chunks adjacent in a pack).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable

from ..errors import CutpointError
from ..vault.store import ChunkSource
from ..vault.manifest import DiskManifest


CACHE_BYTES = 64 << 20          # decoded chunks kept: 16 of v3's 4 MiB, 1024 of v4's 64 KiB


class PointDisk:
    def __init__(self, chunks: ChunkSource, disk: DiskManifest, chunk_size: int, *, cache_chunks: int | None = None,
                 on_fetch: Callable[[int], None] | None = None, readahead: int = 0) -> None:
        """``readahead``: bytes fetched ahead in the background once reads go sequentially (object storage, where
        each fetch waits a round trip: a guest booting or a file being copied reads on, block after block)."""
        self.chunks = chunks
        self.disk = disk
        self.size = disk.size
        self.chunk_size = chunk_size
        self.cache_chunks = cache_chunks or max(4, CACHE_BYTES // chunk_size)
        self.on_fetch = on_fetch
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.fetched = 0
        self._ahead = min(readahead // chunk_size, self.cache_chunks // 2)
        self._next = -1                          # the chunk after the last read: a read starting there is sequential
        self._fetching: set[int] = set()         # chunks a read-ahead is fetching now
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="readahead") if self._ahead else None

    def _chunk(self, i: int) -> bytes | None:
        cid = self.disk.chunks[i]
        if cid is None:
            return None
        with self._lock:
            data = self._cache.get(i)
            if data is not None:
                self._cache.move_to_end(i)
                return data
        data = self.chunks.get(cid)
        with self._lock:
            self._cache[i] = data
            while len(self._cache) > self.cache_chunks:
                self._cache.popitem(last=False)
            self.fetched += 1
        if self.on_fetch:
            self.on_fetch(i)
        return data

    def pread_into(self, buf: memoryview, offset: int) -> None:
        """Fill ``buf`` with the disk's bytes at ``offset`` (reads past the end are an error, as for a file)."""
        n = len(buf)
        if offset < 0 or offset + n > self.size:
            raise ValueError(f"read of {n} bytes at {offset} is outside the disk ({self.size} bytes)")
        pos = 0
        cs = self.chunk_size
        first, last = offset // cs, (offset + n - 1) // cs
        if self._pool is not None:
            if first in (self._next, self._next - 1):
                self._read_ahead(last + 1)
            self._next = last + 1
        if n > cs:
            self._prefetch(first, last)
        while pos < n:
            off = offset + pos
            i, within = divmod(off, cs)
            take = min(n - pos, cs - within)
            data = self._chunk(i)
            if data is None:
                buf[pos:pos + take] = bytes(take)
            else:
                buf[pos:pos + take] = data[within:within + take]
            pos += take

    def _read_ahead(self, start: int) -> None:
        """Fetch the next ``_ahead`` chunks after ``start`` in the background, in runs of what is not cached or
        already coming; a failure there is left for the read that needs the chunk to report."""
        with self._lock:
            want = [i for i in range(start, min(start + self._ahead, len(self.disk.chunks)))
                    if i not in self._cache and i not in self._fetching and self.disk.chunks[i] is not None]
            if len(want) < self._ahead // 2:
                return                           # most of it is here or coming: fetch in larger steps
            self._fetching.update(want)
        assert self._pool is not None

        def fetch() -> None:
            try:
                self._prefetch(want[0], want[-1])
            except CutpointError:           # the read that needs the chunk fetches it again and reports
                pass
            finally:
                with self._lock:
                    self._fetching.difference_update(want)
        self._pool.submit(fetch)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _prefetch(self, first: int, last: int) -> None:
        """A read spanning several chunks fetches the missing ones with one ``get_many`` (format v4 reads adjacent
        chunks of a pack together) instead of one storage read each."""
        want: list[tuple[int, str]] = []
        with self._lock:
            for i in range(first, last + 1):
                cid = self.disk.chunks[i]
                if cid is not None and i not in self._cache:
                    want.append((i, cid))
        if len(want) < 2 or len(want) > self.cache_chunks:
            return
        cs = self.chunk_size
        datas = self.chunks.get_many([c for _, c in want], [min(cs, self.size - i * cs) for i, _ in want])
        with self._lock:
            for (i, _), data in zip(want, datas):
                self._cache[i] = data
                self.fetched += 1
            while len(self._cache) > self.cache_chunks:
                self._cache.popitem(last=False)
        if self.on_fetch:
            for i, _ in want:
                self.on_fetch(i)

    def pread(self, length: int, offset: int) -> bytes:
        out = bytearray(length)
        self.pread_into(memoryview(out), offset)
        return bytes(out)

    def extents(self, offset: int, length: int) -> list[tuple[int, int, bool]]:
        """(offset, length, is_zero) runs covering the range, by chunk: null chunks are holes that read as zeros."""
        out: list[tuple[int, int, bool]] = []
        end = min(offset + length, self.size)
        pos = offset
        cs = self.chunk_size
        while pos < end:
            i = pos // cs
            stop = min((i + 1) * cs, end)
            zero = self.disk.chunks[i] is None
            if out and out[-1][2] == zero and out[-1][0] + out[-1][1] == pos:
                o, ln, z = out[-1]
                out[-1] = (o, ln + stop - pos, z)
            else:
                out.append((pos, stop - pos, zero))
            pos = stop
        return out
