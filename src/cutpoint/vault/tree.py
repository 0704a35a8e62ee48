"""A point's per-disk index as a tree of content-addressed nodes (format v4, docs/format.md §18).

A leaf lists the ids of ``fanout`` consecutive chunks; a node above lists the ids of ``fanout`` nodes below. An
all-zero id stands for a chunk that reads as zeros, or a subtree that is all zeros: it is never stored, so a sparse
1 TiB disk costs a few nodes. Nodes are blobs of kind NODE in packs, deduplicated like data: an incremental writes
only the leaves its changes touch and the path from them to the root; every other node is its parent's, shared.

Node bytes: ``level(u8) count(u32 LE)`` then ``count`` ids of 32 bytes.

``ChunkTree`` reads a tree lazily as a sequence of chunk ids (hex, or None for zeros), the shape every restore path
already reads a manifest's chunk list in, holding only a few decoded leaves at a time.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Protocol, overload

from ..errors import IntegrityError, NotFoundError
from .blob import NODE

HEAD = struct.Struct("<BI")
ZERO = bytes(32)
DEFAULT_FANOUT = 1024
MAX_LEVELS = 8


class NodeStore(Protocol):
    def put_blob(self, data: bytes | memoryview, kind: int, bid: bytes | None = None) -> tuple[bytes, int]: ...

    def get_blob(self, bid: bytes, kind: int, expect: int | None = None) -> bytes: ...


def encode_node(level: int, ids: Sequence[bytes | None]) -> bytes:
    return HEAD.pack(level, len(ids)) + b"".join(i or ZERO for i in ids)


def decode_node(data: bytes, level: int, count: int, what: str) -> list[bytes | None]:
    if len(data) != HEAD.size + 32 * count:
        raise IntegrityError(f"{what} is damaged: {len(data)} bytes for {count} entries")
    got_level, got_count = HEAD.unpack_from(data)
    if (got_level, got_count) != (level, count):
        raise IntegrityError(f"{what} is damaged: level {got_level} with {got_count} entries where level {level} "
                             f"with {count} is expected")
    out: list[bytes | None] = []
    for i in range(count):
        b = data[HEAD.size + 32 * i: HEAD.size + 32 * (i + 1)]
        out.append(None if b == ZERO else b)
    return out


def height_for(count: int, fanout: int) -> int:
    """Levels of a tree over ``count`` chunks: 1 is a single leaf."""
    h, span = 1, fanout
    while span < count:
        h += 1
        span *= fanout
    if h > MAX_LEVELS:
        raise IntegrityError(f"a tree of {count} chunks is deeper than {MAX_LEVELS} levels")
    return h


def build(store: NodeStore, leaves: list[bytes | None], count: int, fanout: int) -> tuple[bytes | None, int, int]:
    """The root over already-stored leaves: (root id or None, height, bytes written for the nodes above)."""
    height = height_for(count, fanout)
    level, ids, written = 1, leaves, 0
    while level < height:
        above: list[bytes | None] = []
        for j in range(0, len(ids), fanout):
            part = ids[j:j + fanout]
            if all(p is None for p in part):
                above.append(None)
                continue
            bid, w = store.put_blob(encode_node(level, part), NODE)
            above.append(bid)
            written += w
        ids, level = above, level + 1
    return ids[0] if ids else None, height, written


def store_leaf(store: NodeStore, entries: Sequence[bytes | None]) -> tuple[bytes | None, int]:
    if all(e is None for e in entries):
        return None, 0
    return store.put_blob(encode_node(0, entries), NODE)


class ChunkTree(Sequence[str | None]):
    """The chunk ids of one disk, read from its tree on demand."""

    def __init__(self, store: NodeStore, root: bytes | None, height: int, count: int, fanout: int,
                 cache_leaves: int = 4) -> None:
        if count < 0 or fanout < 2 or height != height_for(max(count, 1), fanout):
            raise IntegrityError(f"index tree of {count} chunks is damaged: height {height}, fanout {fanout}")
        self.store, self.root, self.height, self.n, self.fanout = store, root, height, count, fanout
        self._leaves: list[bytes | None] | None = None
        self._cache: OrderedDict[int, list[bytes | None]] = OrderedDict()
        self._cache_leaves = cache_leaves
        self._lock = threading.Lock()          # restore and backup workers read leaves from several threads

    def __len__(self) -> int:
        return self.n

    def _span(self, level: int) -> int:
        return self.fanout ** (level + 1)          # chunks under one node of ``level``

    def _entries(self, level: int, first_chunk: int) -> int:
        """Entries of the node of ``level`` that starts at chunk ``first_chunk``."""
        below = self.fanout ** level
        return min(self.fanout, -(-(self.n - first_chunk) // below))

    def leaf_ids(self) -> list[bytes | None]:
        """Ids of every leaf in order (None for an all-zero leaf); reads only the nodes above the leaves."""
        if self._leaves is None:
            ids: list[bytes | None] = [self.root]
            for level in range(self.height - 1, 0, -1):
                below: list[bytes | None] = []
                span = self._span(level)
                for j, nid in enumerate(ids):
                    n = self._entries(level, j * span)
                    below += [None] * n if nid is None else self._node(nid, level, n)
                ids = below
            self._leaves = ids
        return self._leaves

    def walk(self, seen: set[bytes]) -> Iterator[tuple[bytes, int, list[bytes | None]]]:
        """(id, level, entries) of every node of the tree not yet in ``seen`` (added as it goes): a subtree already
        seen, for instance shared with another point, is not read again. A leaf's entries are chunk ids."""
        def visit(nid: bytes | None, level: int, first: int) -> Iterator[tuple[bytes, int, list[bytes | None]]]:
            if nid is None or nid in seen:
                return
            seen.add(nid)
            entries = self._node(nid, level, self._entries(level, first))
            yield nid, level, entries
            if level:
                span = self.fanout ** level
                for k, child in enumerate(entries):
                    yield from visit(child, level - 1, first + k * span)
        yield from visit(self.root, self.height - 1, 0)

    def _node(self, nid: bytes, level: int, count: int) -> list[bytes | None]:
        try:
            data = self.store.get_blob(nid, NODE)
        except NotFoundError as exc:        # a point whose index is incomplete is damaged, like a missing chunk
            raise IntegrityError(f"index node {nid.hex()} is missing from the vault") from exc
        return decode_node(data, level, count, f"index node {nid.hex()[:16]}")

    def leaf(self, j: int) -> list[bytes | None]:
        """The chunk ids (bytes, None for zeros) of leaf ``j``."""
        with self._lock:
            got = self._cache.get(j)
            if got is not None:
                self._cache.move_to_end(j)
                return got
            n = self._entries(0, j * self.fanout)
            lid = self.leaf_ids()[j]
        got = [None] * n if lid is None else self._node(lid, 0, n)
        with self._lock:
            self._cache[j] = got
            while len(self._cache) > self._cache_leaves:
                self._cache.popitem(last=False)
        return got

    @overload
    def __getitem__(self, i: int) -> str | None: ...

    @overload
    def __getitem__(self, i: slice) -> list[str | None]: ...

    def __getitem__(self, i: int | slice) -> str | None | list[str | None]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self.n))]
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(i)
        b = self.leaf(i // self.fanout)[i % self.fanout]
        return None if b is None else b.hex()

    def __iter__(self) -> Iterator[str | None]:
        for j, lid in enumerate(self.leaf_ids()):
            n = self._entries(0, j * self.fanout)
            if lid is None:
                yield from (None for _ in range(n))
            else:
                for b in self.leaf(j):
                    yield None if b is None else b.hex()
