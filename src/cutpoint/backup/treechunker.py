"""Turning one frozen disk into an index tree of small chunks (format v4 vaults; ``chunker.py`` is v2/v3's).

The work is driven by extents, never by the disk's size: a full backup reads the runs that ``base:allocation`` does
not report as zeros, an incremental reads the chunks the dirty bitmap touches, and every leaf of the tree that no
such run touches is the previous point's leaf, by id, unread. A 1 TiB disk with a few changed MiB therefore costs a
few leaves and the path from them to the root (``vault/tree.py``).

Chunks are read in runs of up to 4 MiB (one NBD request each) and split into chunks on worker threads, where
hashing, the compression probe, compression and sealing run (all release the GIL) while the main thread keeps the
next runs in flight. A chunk only partly dirty (a bitmap finer than the chunk) is rebuilt from the previous point's
chunk with only its dirty ranges read from the VM; a previous chunk no longer in the vault is read whole instead.
"""

from __future__ import annotations

import bisect
import mmap
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import heap
from ..errors import IntegrityError, NotFoundError
from ..reader.export import Extent, ExportReader
from ..vault import tree
from ..vault.blob import DATA
from ..vault.packstore import PackStore
from ..vault.tree import ChunkTree
from .chunker import Progress

RUN_BYTES = 4 << 20
IN_FLIGHT = 6                 # runs queued at once: memory stays near IN_FLIGHT x 4 MiB whatever the disk


@dataclass
class TreeResult:
    tree: ChunkTree
    read_bytes: int
    stored_bytes: int
    index_bytes: int
    dirty_bytes: int | None


@dataclass
class _Run:
    first: int                                   # chunk index
    count: int
    partial: dict[int, list[tuple[int, int]]] = field(default_factory=dict)   # chunk -> dirty ranges in it


class _Zeros:
    """Membership of byte ranges in the disk's all-zero extents (sorted, merged), by bisection."""

    def __init__(self, extents: list[Extent]) -> None:
        self.starts = [e.offset for e in extents]
        self.ends = [e.offset + e.length for e in extents]

    def covers(self, off: int, length: int) -> bool:
        k = bisect.bisect_right(self.starts, off) - 1
        return k >= 0 and self.ends[k] >= off + length


def _nonzero(zero: list[Extent], size: int) -> Iterator[tuple[int, int]]:
    pos = 0
    for e in zero:
        if e.offset > pos:
            yield pos, e.offset - pos
        pos = max(pos, e.offset + e.length)
    if pos < size:
        yield pos, size - pos


def _merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for off, length in sorted(spans):
        if out and off <= out[-1][0] + out[-1][1]:
            o, ln = out[-1]
            out[-1] = (o, max(ln, off + length - o))
        elif length > 0:
            out.append((off, length))
    return out


def _chunks(spans: Iterator[tuple[int, int]] | list[tuple[int, int]], cs: int
            ) -> Iterator[tuple[int, list[tuple[int, int]]]]:
    """(chunk index, the byte ranges of it the spans cover), each chunk once, in order (spans sorted, disjoint)."""
    cur, rs = -1, list[tuple[int, int]]()
    for off, length in spans:
        pos, end = off, off + length
        while pos < end:
            i = pos // cs
            stop = min(end, (i + 1) * cs)
            if i != cur:
                if cur >= 0:
                    yield cur, rs
                cur, rs = i, []
            rs.append((pos, stop - pos))
            pos = stop
    if cur >= 0:
        yield cur, rs


def _runs(spans: Iterator[tuple[int, int]] | list[tuple[int, int]], cs: int, size: int, fanout: int,
          partial_ok: bool) -> Iterator[_Run]:
    """Runs of chunks covering the byte spans, in order, each inside one leaf and at most RUN_BYTES long. With
    ``partial_ok``, a chunk a span covers only in part is its own run with those ranges (patched, not read)."""
    per_run = max(1, RUN_BYTES // cs)
    run: _Run | None = None
    for i, rs in _chunks(spans, cs):
        length = min(cs, size - i * cs)
        if partial_ok and sum(r for _, r in rs) < length:
            if run:
                yield run
                run = None
            yield _Run(i, 1, {i: rs})
            continue
        if run and run.first + run.count == i and run.count < per_run and i // fanout == run.first // fanout:
            run.count += 1
        else:
            if run:
                yield run
            run = _Run(i, 1)
    if run:
        yield run


def read_disk_tree(reader: ExportReader, name: str, size: int, cs: int, store: PackStore, fanout: int, *,
                   prev: ChunkTree | None = None, nodes_base: ChunkTree | None = None,
                   progress: Progress | None = None, pool: ThreadPoolExecutor | None = None) -> TreeResult:
    """One disk into the vault as an index tree. ``prev``: the parent point's tree, whose unchanged leaves are
    inherited (an incremental). ``nodes_base``: the tree whose nodes new ones are written as deltas over (default
    ``prev``; ignored unless it has this disk's shape): an encoding choice only, no data is taken from it. Freed
    memory is kept for reuse meanwhile (``heap.kept``)."""
    with heap.kept():
        return _read_disk_tree(reader, name, size, cs, store, fanout, prev, nodes_base, progress, pool)


def _read_disk_tree(reader: ExportReader, name: str, size: int, cs: int, store: PackStore, fanout: int,
                    prev: ChunkTree | None, nodes_base: ChunkTree | None, progress: Progress | None,
                    pool: ThreadPoolExecutor | None) -> TreeResult:
    n = -(-size // cs)
    nleaves = -(-n // fanout)
    zero_ext = reader.zero_extents()
    zeros = _Zeros(zero_ext)
    dirty_bytes: int | None = None
    if prev is not None:
        if len(prev) != n or prev.fanout != fanout:
            raise IntegrityError(f"the previous point's index of disk {name} does not fit this disk; back up "
                                 "with --full")
        dirty = reader.dirty_extents()
        dirty_bytes = sum(e.length for e in dirty)
        leaf_ids = list(prev.leaf_ids())
        spans = [(e.offset, e.length) for e in dirty] + _lost(store, prev, cs, size)
        runs = _runs(_merge_spans(spans), cs, size, fanout, True)
    else:
        leaf_ids = [None] * nleaves
        runs = _runs(_nonzero(zero_ext, size), cs, size, fanout, False)

    base = prev if prev is not None else nodes_base
    if base is not None and (len(base) != n or base.fanout != fanout):
        base = None
    own_pool = pool is None
    pool = pool or ThreadPoolExecutor(max_workers=2)
    entries: dict[int, list[bytes | None]] = {}       # open leaves
    waiting: dict[int, int] = {}                      # leaf -> runs not yet done
    pending: deque[tuple[_Run, Future[list[tuple[int, bytes | None, int, int]]]]] = deque()
    totals = {"read": 0, "stored": 0, "index": 0}
    current = -1

    def close_leaf(j: int) -> None:
        lid, w = tree.store_leaf(store, entries.pop(j), base.base_for(0, j) if base is not None else None)
        leaf_ids[j] = lid
        totals["index"] += w

    def drain(limit: int) -> None:
        while len(pending) > limit:
            run, fut = pending.popleft()
            j = run.first // fanout
            leaf = entries[j]
            for i, bid, written, nread in fut.result():
                leaf[i - j * fanout] = bid
                totals["stored"] += written
                totals["read"] += nread
            waiting[j] -= 1
            if waiting[j] == 0 and j < current:
                del waiting[j]
                close_leaf(j)
            if progress:
                progress(name, min((run.first + run.count) * cs, size), size)

    try:
        for run in runs:
            j = run.first // fanout
            if j != current:
                for k in [k for k, w in waiting.items() if w == 0 and k < j]:
                    del waiting[k]
                    close_leaf(k)
                current = j
                if j not in entries:
                    count = min(fanout, n - j * fanout)
                    entries[j] = list(prev.leaf(j)) if prev is not None else [None] * count
                    waiting[j] = 0
            waiting[j] += 1
            pending.append((run, pool.submit(_do_run, store, reader, run, cs, size, zeros, prev)))
            drain(IN_FLIGHT)
        current = nleaves
        drain(0)
        for k in list(waiting):
            del waiting[k]
            close_leaf(k)
    finally:
        for _, fut in pending:
            fut.cancel()
        if own_pool:
            pool.shutdown(wait=True)
    if progress:
        progress(name, size, size)             # the whole disk is accounted for, read or inherited
    root, height, written = tree.build(store, leaf_ids, n, fanout, base)
    totals["index"] += written
    t = ChunkTree(store, root, height, n, fanout, deltas=True)
    return TreeResult(t, totals["read"], totals["stored"], totals["index"], dirty_bytes)


def _lost(store: PackStore, prev: ChunkTree, cs: int, size: int) -> list[tuple[int, int]]:
    """Whole-chunk spans of the previous point's chunks that verify marked damaged (and no good copy exists): an
    incremental must not inherit them, so it reads them from the VM again. Only then are all leaves read."""
    lost = store.lost_ids()
    if not lost:
        return []
    out = []
    for j, lid in enumerate(prev.leaf_ids()):
        if lid is None:
            continue
        for k, bid in enumerate(prev.leaf(j)):
            if bid is not None and bid in lost:
                i = j * prev.fanout + k
                out.append((i * cs, min(cs, size - i * cs)))
    return out


_ZERO: dict[int, bytes] = {}
_local = threading.local()


def _run_buffer(length: int) -> memoryview:
    """This worker thread's buffer for a run of ``length`` bytes: reused, since fresh memory costs more than the read
    here, and free again once ``_do_run`` returns (``put_many`` keeps no view of it: a blob stored as it is
    is copied into the pack before ``put_many`` returns). A run is at most RUN_BYTES, or one chunk where chunks
    are larger (up to the vault's 64 MiB). An anonymous mapping, not a bytearray: its pages are faulted in as reads
    first reach them, so an incremental's 64 KiB runs touch 64 KiB of it, where a bytearray's zeroing touched all 4
    MiB on every worker (16 MiB of fresh memory per process)."""
    b = getattr(_local, "buf", None)
    if b is None or len(b) < length:
        b = _local.buf = memoryview(mmap.mmap(-1, max(RUN_BYTES, length)))
    return b[:length]


def _zero(length: int) -> bytes:
    z = _ZERO.get(length)
    if z is None:
        z = _ZERO.setdefault(length, bytes(length))
    return z


def _do_run(store: PackStore, reader: ExportReader, run: _Run, cs: int, size: int, zeros: _Zeros,
            prev: ChunkTree | None) -> list[tuple[int, bytes | None, int, int]]:
    """One run, on a worker thread: (chunk index, id or None for zeros, bytes stored, bytes read from the VM)."""
    off = run.first * cs
    length = min(run.count * cs, size - off)
    if zeros.covers(off, length):
        return [(i, None, 0, 0) for i in range(run.first, run.first + run.count)]
    if run.partial:
        (i, ranges), = run.partial.items()
        old = prev[i] if prev is not None else None
        base = None
        if old is not None:
            try:
                base = bytearray(store.get(old, length))
            except (IntegrityError, NotFoundError):
                base = None
        if base is None:                       # no usable previous chunk: read it whole
            data: bytes | bytearray = reader.pread(off, length)
            nread = length
        else:
            for o, ln in ranges:
                base[o - off:o - off + ln] = reader.pread(o, ln)
            data, nread = base, sum(ln for _, ln in ranges)
        return [(i, *_store(store, memoryview(data)), nread)]
    buf = _run_buffer(length)
    reader.read_into(buf, off, length)
    idx, views = [], []
    out: list[tuple[int, bytes | None, int, int]] = []
    for k in range(run.count):
        a = k * cs
        b = min(a + cs, length)
        view = buf[a:b]
        if zeros.covers(off + a, b - a) or _is_zero(view):
            out.append((run.first + k, None, 0, b - a))
        else:
            idx.append(len(out))
            views.append(view)
            out.append((run.first + k, None, 0, b - a))
    for pos, (bid, written) in zip(idx, store.put_many(views, DATA)):
        i, _, _, nread = out[pos]
        out[pos] = (i, bid, written, nread)
    return out


def _is_zero(view: memoryview) -> bool:
    """Whether a piece reads as zeros. A memoryview compares element by element (2 s per GiB of zeros here), so
    the first bytes decide most cases and only a zero prefix pays for a copy and one ``memcmp``."""
    return view[:16] == _zero(16)[:len(view[:16])] and bytes(view) == _zero(len(view))


def _store(store: PackStore, view: memoryview) -> tuple[bytes | None, int]:
    if _is_zero(view):
        return None, 0
    return store.put_blob(view, DATA)
