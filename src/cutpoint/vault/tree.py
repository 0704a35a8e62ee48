"""A point's per-disk index as a tree of content-addressed nodes (format v4, docs/format.md §18.5).

A leaf lists the ids of ``fanout`` consecutive chunks; a node above lists the ids of ``fanout`` nodes below. An
all-zero id stands for a chunk that reads as zeros, or a subtree that is all zeros: it is never stored, so a sparse
1 TiB disk costs a few nodes. Nodes are blobs of kind NODE in packs, deduplicated like data: an incremental writes
only the nodes its changes touch and the path from them to the root; every other node is its parent's, shared.

A node is *full* (``level(u8) count(u32 LE)`` then ``count`` ids of 32 bytes) or, in manifests of format 4, a
*delta*: ``level|0x80 (u8) count(u32)``, the id of a full node of the same place (its *base*), ``n(u32)`` and ``n``
pairs ``slot(u32) id(32)``, slots strictly increasing. Without deltas, 1% of scattered 64 KiB writes on a full 1 TiB
disk touches every leaf, and every incremental would rewrite the whole 512 MiB index; with them it writes the
changed entries. A delta's base is always full (a new delta over a delta's place is taken against that delta's
base), so reading any node costs at most two blobs; a delta holding more than a quarter of its node's entries is
written full instead.

``ChunkTree`` reads a tree lazily as a sequence of chunk ids (hex, or None for zeros), the shape every restore path
already reads a manifest's chunk list in, holding only a few decoded leaves at a time.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, overload

from ..errors import IntegrityError, NotFoundError
from .blob import NODE

HEAD = struct.Struct("<BI")
COUNT = struct.Struct("<I")
SLOT = struct.Struct("<I")
ZERO = bytes(32)
DELTA = 0x80
DEFAULT_FANOUT = 1024
MAX_LEVELS = 8
DELTA_SHARE = 4          # a delta may hold at most 1/DELTA_SHARE of its node's entries


class NodeStore(Protocol):
    def put_blob(self, data: bytes | memoryview, kind: int, bid: bytes | None = None) -> tuple[bytes, int]: ...

    def get_blob(self, bid: bytes, kind: int, expect: int | None = None) -> bytes: ...


@dataclass(frozen=True)
class Node:
    """A decoded node: its entries, and for a delta the full node it was read over."""
    entries: list[bytes | None]
    base: bytes | None = None
    base_entries: list[bytes | None] | None = None

    def full(self, nid: bytes) -> tuple[bytes, list[bytes | None]]:
        """The full node a new node of this place may be written as a delta over."""
        if self.base is None:
            return nid, self.entries
        assert self.base_entries is not None
        return self.base, self.base_entries


def encode_node(level: int, ids: Sequence[bytes | None]) -> bytes:
    return HEAD.pack(level, len(ids)) + b"".join(i or ZERO for i in ids)


def encode_delta(level: int, count: int, base: bytes, changes: Sequence[tuple[int, bytes | None]]) -> bytes:
    return (HEAD.pack(level | DELTA, count) + base + COUNT.pack(len(changes))
            + b"".join(SLOT.pack(k) + (i or ZERO) for k, i in changes))


def decode_node(data: bytes, level: int, count: int, what: str) -> list[bytes | None]:
    """The entries of a full node, checked against its place in the tree."""
    _check_head(data, level, count, what, False)
    if len(data) != HEAD.size + 32 * count:
        raise IntegrityError(f"{what} is damaged: {len(data)} bytes for {count} entries")
    out: list[bytes | None] = []
    for i in range(count):
        b = data[HEAD.size + 32 * i: HEAD.size + 32 * (i + 1)]
        out.append(None if b == ZERO else b)
    return out


def decode_delta(data: bytes, level: int, count: int, what: str) -> tuple[bytes, list[tuple[int, bytes | None]]]:
    """(base id, changes) of a delta node; slots must be in range and strictly increasing."""
    _check_head(data, level, count, what, True)
    pos = HEAD.size + 32
    if len(data) < pos + COUNT.size:
        raise IntegrityError(f"{what} is damaged: a delta of {len(data)} bytes")
    base = data[HEAD.size:pos]
    (n,) = COUNT.unpack_from(data, pos)
    pos += COUNT.size
    if base == ZERO or n == 0 or n > count or len(data) != pos + n * (SLOT.size + 32):
        raise IntegrityError(f"{what} is damaged: a delta of {len(data)} bytes with {n} changes of {count} entries")
    changes: list[tuple[int, bytes | None]] = []
    last = -1
    for _ in range(n):
        (k,) = SLOT.unpack_from(data, pos)
        b = data[pos + SLOT.size:pos + SLOT.size + 32]
        pos += SLOT.size + 32
        if not last < k < count:
            raise IntegrityError(f"{what} is damaged: a delta changes slot {k} after {last} of {count} entries")
        changes.append((k, None if b == ZERO else b))
        last = k
    return base, changes


def _check_head(data: bytes, level: int, count: int, what: str, delta: bool) -> None:
    if len(data) < HEAD.size:
        raise IntegrityError(f"{what} is damaged: {len(data)} bytes")
    got_level, got_count = HEAD.unpack_from(data)
    if (got_level & ~DELTA, got_count) != (level, count):
        raise IntegrityError(f"{what} is damaged: level {got_level & ~DELTA} with {got_count} entries where level "
                             f"{level} with {count} is expected")
    if bool(got_level & DELTA) != delta:
        raise IntegrityError(f"{what} is damaged: a {'full node' if delta else 'delta'} where a "
                             f"{'delta' if delta else 'full node'} is expected")


def is_delta(data: bytes) -> bool:
    return bool(data[:1]) and bool(data[0] & DELTA)


def height_for(count: int, fanout: int) -> int:
    """Levels of a tree over ``count`` chunks: 1 is a single leaf."""
    h, span = 1, fanout
    while span < count:
        h += 1
        span *= fanout
    if h > MAX_LEVELS:
        raise IntegrityError(f"a tree of {count} chunks is deeper than {MAX_LEVELS} levels")
    return h


def store_node(store: NodeStore, level: int, entries: Sequence[bytes | None],
               base: tuple[bytes, list[bytes | None]] | None = None) -> tuple[bytes | None, int]:
    """Store a node (None for an all-zero one): full, or as a delta over ``base`` (the id and entries of the full
    node the previous point has at this place) when few entries differ; unchanged, it is the base itself."""
    if all(e is None for e in entries):
        return None, 0
    if base is not None and len(base[1]) == len(entries):
        bid, old = base
        changes = [(k, e) for k, (e, o) in enumerate(zip(entries, old)) if e != o]
        if not changes:
            return bid, 0
        if len(changes) * DELTA_SHARE <= len(entries):
            return store.put_blob(encode_delta(level, len(entries), bid, changes), NODE)
    return store.put_blob(encode_node(level, entries), NODE)


def store_leaf(store: NodeStore, entries: Sequence[bytes | None],
               base: tuple[bytes, list[bytes | None]] | None = None) -> tuple[bytes | None, int]:
    return store_node(store, 0, entries, base)


def build(store: NodeStore, leaves: list[bytes | None], count: int, fanout: int,
          prev: ChunkTree | None = None) -> tuple[bytes | None, int, int]:
    """The root over already-stored leaves: (root id or None, height, bytes written for the nodes above). With
    ``prev`` (the parent point's tree of the same shape, read with deltas allowed), nodes are written as deltas over
    its nodes where that is smaller."""
    height = height_for(count, fanout)
    level, ids, written = 1, leaves, 0
    while level < height:
        above: list[bytes | None] = []
        for j in range(0, len(ids), fanout):
            part = ids[j:j + fanout]
            base = prev.base_for(level, j // fanout) if prev is not None else None
            bid, w = store_node(store, level, part, base)
            above.append(bid)
            written += w
        ids, level = above, level + 1
    return ids[0] if ids else None, height, written


class ChunkTree(Sequence[str | None]):
    """The chunk ids of one disk, read from its tree on demand. ``deltas`` says whether its manifest's format
    allows delta nodes (format 4); in a format-3 point a delta is damage."""

    def __init__(self, store: NodeStore, root: bytes | None, height: int, count: int, fanout: int,
                 cache_leaves: int = 4, deltas: bool = False) -> None:
        if count < 0 or fanout < 2 or height != height_for(max(count, 1), fanout):
            raise IntegrityError(f"index tree of {count} chunks is damaged: height {height}, fanout {fanout}")
        self.store, self.root, self.height, self.n, self.fanout = store, root, height, count, fanout
        self.deltas = deltas
        self._levels: dict[int, list[bytes | None]] = {}
        self._cache: OrderedDict[int, Node] = OrderedDict()
        self._cache_leaves = cache_leaves
        self._lock = threading.RLock()         # restore and backup workers read leaves from several threads

    def __len__(self) -> int:
        return self.n

    def _span(self, level: int) -> int:
        return self.fanout ** (level + 1)          # chunks under one node of ``level``

    def _entries(self, level: int, first_chunk: int) -> int:
        """Entries of the node of ``level`` that starts at chunk ``first_chunk``."""
        below = self.fanout ** level
        return min(self.fanout, -(-(self.n - first_chunk) // below))

    def level_ids(self, level: int) -> list[bytes | None]:
        """Ids of every node of ``level`` in order (None for an all-zero subtree); reads only the nodes above."""
        with self._lock:
            return self._level_ids(level)

    def _level_ids(self, level: int) -> list[bytes | None]:
        if level not in self._levels:
            ids: list[bytes | None] = [self.root]
            self._levels[self.height - 1] = ids
            for lv in range(self.height - 1, level, -1):
                below: list[bytes | None] = []
                span = self._span(lv)
                for j, nid in enumerate(ids):
                    n = self._entries(lv, j * span)
                    below += [None] * n if nid is None else self._load(nid, lv, n).entries
                ids = below
                self._levels[lv - 1] = ids
        return self._levels[level]

    def leaf_ids(self) -> list[bytes | None]:
        """Ids of every leaf in order (None for an all-zero leaf); reads only the nodes above the leaves."""
        return self.level_ids(0)

    def base_for(self, level: int, j: int) -> tuple[bytes, list[bytes | None]] | None:
        """The full node (id, entries) that a new node at place ``j`` of ``level`` may be a delta over: this tree's
        node there, or the base it is a delta over. None where this tree has no node, or none that reads: a base is
        an encoding choice, so a damaged one means a full node is written, never a failed backup."""
        try:
            ids = self.level_ids(level)
            nid = ids[j] if j < len(ids) else None
            if nid is None:
                return None
            node = self._leaf_node(j) if level == 0 else self._load(nid, level,
                                                                    self._entries(level, j * self._span(level)))
        except IntegrityError:
            return None
        return node.full(nid)

    def walk(self, seen: set[bytes], bases: set[bytes] | None = None
             ) -> Iterator[tuple[bytes, int, list[bytes | None]]]:
        """(id, level, entries) of every node of the tree not yet in ``seen`` (added as it goes): a subtree already
        seen, for instance shared with another point, is not read again. A leaf's entries are chunk ids. The full
        nodes that deltas are read over are added to ``bases``: they must be kept, but their own entries are not
        this tree's (an entry a delta replaced is not referenced)."""
        def visit(nid: bytes | None, level: int, first: int) -> Iterator[tuple[bytes, int, list[bytes | None]]]:
            if nid is None or nid in seen:
                return
            seen.add(nid)
            node = self._load(nid, level, self._entries(level, first))
            if node.base is not None and bases is not None:
                bases.add(node.base)
            yield nid, level, node.entries
            if level:
                span = self.fanout ** level
                for k, child in enumerate(node.entries):
                    yield from visit(child, level - 1, first + k * span)
        yield from visit(self.root, self.height - 1, 0)

    def _get(self, nid: bytes) -> bytes:
        try:
            return self.store.get_blob(nid, NODE)
        except NotFoundError as exc:        # a point whose index is incomplete is damaged, like a missing chunk
            raise IntegrityError(f"index node {nid.hex()} is missing from the vault") from exc

    def _load(self, nid: bytes, level: int, count: int) -> Node:
        what = f"index node {nid.hex()[:16]}"
        data = self._get(nid)
        if not is_delta(data):
            return Node(decode_node(data, level, count, what))
        if not self.deltas:
            raise IntegrityError(f"{what} is damaged: a delta in a point whose format has none")
        base, changes = decode_delta(data, level, count, what)
        base_entries = decode_node(self._get(base), level, count, f"index node {base.hex()[:16]} (a delta's base)")
        entries = list(base_entries)
        for k, b in changes:
            entries[k] = b
        return Node(entries, base, base_entries)

    def _leaf_node(self, j: int) -> Node:
        with self._lock:
            got = self._cache.get(j)
            if got is not None:
                self._cache.move_to_end(j)
                return got
            n = self._entries(0, j * self.fanout)
            lid = self.leaf_ids()[j]
        got = Node([None] * n) if lid is None else self._load(lid, 0, n)
        with self._lock:
            self._cache[j] = got
            while len(self._cache) > self._cache_leaves:
                self._cache.popitem(last=False)
        return got

    def leaf(self, j: int) -> list[bytes | None]:
        """The chunk ids (bytes, None for zeros) of leaf ``j``."""
        return self._leaf_node(j).entries

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
