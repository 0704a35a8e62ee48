"""Index trees with delta nodes (format 4 manifests, docs/format.md §18.5): an incremental writes the entries that
changed, not every node its changes touch; and the faults of a delta (wrong format, a chain, bad slots, a missing or
collected base) are damage by name, never wrong data."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest

from cutpoint.catalog.db import VmRecord
from cutpoint.errors import IntegrityError
from cutpoint.vault import tree
from cutpoint.vault.blob import DATA, NODE
from cutpoint.vault.gc import gc
from cutpoint.vault.manifest import FORMAT_DELTA, DiskManifest, Manifest
from cutpoint.vault.packstore import PackStore
from cutpoint.vault.prune import prune
from cutpoint.vault.retention import Retention
from cutpoint.vault.tree import ChunkTree
from cutpoint.vault.verify import verify
from tests.vault.util import open_vault

KiB = 1 << 10
FAN = 64
N = FAN * FAN * 3                 # three level-1 nodes under a root: height 3


def _store() -> PackStore:
    v = open_vault()
    assert isinstance(v.chunks, PackStore)
    return v.chunks


def _ids(s: PackStore, n: int) -> list[bytes | None]:
    return [None if i % 7 == 0 else s.put_blob(os.urandom(64), DATA)[0] for i in range(n)]


def _tree(s: PackStore, ids: list[bytes | None], prev: ChunkTree | None = None) -> tuple[ChunkTree, int]:
    """Store ``ids`` as a tree the way a backup does (deltas over ``prev``): the tree and the index bytes written."""
    leaves, written = [], 0
    for j in range(0, len(ids), FAN):
        base = prev.base_for(0, j // FAN) if prev is not None else None
        lid, w = tree.store_leaf(s, ids[j:j + FAN], base)
        leaves.append(lid)
        written += w
    root, height, w = tree.build(s, leaves, len(ids), FAN, prev)
    return ChunkTree(s, root, height, len(ids), FAN, deltas=True), written + w


def _hexes(ids: list[bytes | None]) -> list[str | None]:
    return [None if i is None else i.hex() for i in ids]


def test_scattered_changes_write_delta_nodes_whose_size_follows_the_change() -> None:
    s = _store()
    ids = _ids(s, N)
    t1, full = _tree(s, ids)
    # one change in every leaf: without deltas every node of the tree would be written again
    ids2 = list(ids)
    for j in range(0, N, FAN):
        ids2[j + 3] = s.put_blob(os.urandom(64), DATA)[0]
    t2, inc = _tree(s, ids2, t1)
    assert list(t2) == _hexes(ids2) and list(t1) == _hexes(ids)
    leaf = t2.leaf_ids()[5]
    assert leaf is not None and tree.is_delta(s.get_blob(leaf, NODE))
    assert inc < full / 4, (inc, full)


def test_a_delta_over_a_delta_is_taken_against_the_full_base() -> None:
    s = _store()
    ids = _ids(s, N)
    t1, _ = _tree(s, ids)
    ids2 = list(ids)
    ids2[10] = s.put_blob(os.urandom(64), DATA)[0]
    t2, _ = _tree(s, ids2, t1)
    ids3 = list(ids2)
    ids3[11] = s.put_blob(os.urandom(64), DATA)[0]
    ids3[12] = None                                        # a chunk that became zeros
    t3, _ = _tree(s, ids3, t2)
    assert list(t3) == _hexes(ids3)
    base, changes = tree.decode_delta(s.get_blob(t3.leaf_ids()[0], NODE), 0, FAN, "leaf")   # type: ignore[arg-type]
    assert base == t1.leaf_ids()[0]
    assert [k for k, _ in changes] == [10, 11, 12] and changes[2][1] is None


def test_many_changes_write_a_full_node_and_a_reverted_one_is_its_base() -> None:
    s = _store()
    ids = _ids(s, N)
    t1, _ = _tree(s, ids)
    ids2 = list(ids)
    for k in range(FAN // 2):                              # half of leaf 0: more than a delta may hold
        ids2[k] = s.put_blob(os.urandom(64), DATA)[0]
    t2, _ = _tree(s, ids2, t1)
    lid = t2.leaf_ids()[0]
    assert lid is not None and not tree.is_delta(s.get_blob(lid, NODE))
    t3, written = _tree(s, ids, t2)                        # back to the first point's chunks
    assert t3.root == t1.root and written == 0


def _node(s: PackStore, data: bytes) -> bytes:
    return s.put_blob(data, NODE)[0]


def test_a_delta_in_a_format_3_point_is_damage() -> None:
    s = _store()
    ids = _ids(s, FAN)
    t1, _ = _tree(s, ids)
    ids2 = list(ids)
    ids2[1] = s.put_blob(os.urandom(64), DATA)[0]
    t2, _ = _tree(s, ids2, t1)
    with pytest.raises(IntegrityError, match="a delta in a point whose format has none"):
        list(ChunkTree(s, t2.root, 1, FAN, FAN))


def test_a_delta_whose_base_is_a_delta_is_damage() -> None:
    s = _store()
    full = _node(s, tree.encode_node(0, [os.urandom(32)] * 4))
    d1 = _node(s, tree.encode_delta(0, 4, full, [(1, os.urandom(32))]))
    d2 = _node(s, tree.encode_delta(0, 4, d1, [(2, os.urandom(32))]))
    assert len(ChunkTree(s, d1, 1, 4, 4, deltas=True)) == 4 and list(ChunkTree(s, d1, 1, 4, 4, deltas=True))
    with pytest.raises(IntegrityError, match="a delta where a full node is expected"):
        list(ChunkTree(s, d2, 1, 4, 4, deltas=True))


@pytest.mark.parametrize("slots", [[2, 1], [1, 1], [4]], ids=["out_of_order", "repeated", "out_of_range"])
def test_a_delta_with_bad_slots_is_damage(slots: list[int]) -> None:
    s = _store()
    full = _node(s, tree.encode_node(0, [os.urandom(32)] * 4))
    bad = _node(s, tree.encode_delta(0, 4, full, [(k, os.urandom(32)) for k in slots]))
    with pytest.raises(IntegrityError, match="a delta changes slot"):
        list(ChunkTree(s, bad, 1, 4, 4, deltas=True))


def test_a_truncated_delta_is_damage() -> None:
    s = _store()
    full = _node(s, tree.encode_node(0, [os.urandom(32)] * 4))
    bad = _node(s, tree.encode_delta(0, 4, full, [(1, os.urandom(32))])[:-1])
    with pytest.raises(IntegrityError, match="damaged: a delta of"):
        list(ChunkTree(s, bad, 1, 4, 4, deltas=True))


def test_a_delta_whose_base_is_missing_is_damage() -> None:
    s = _store()
    bad = _node(s, tree.encode_delta(0, 4, os.urandom(32), [(1, os.urandom(32))]))
    with pytest.raises(IntegrityError, match="missing from the vault"):
        list(ChunkTree(s, bad, 1, 4, 4, deltas=True))


def _commit(v, n: int, datas: list[bytes], prev: ChunkTree | None) -> str:
    s = v.chunks
    ids = [s.put_blob(d, DATA)[0] for d in datas]
    leaves = []
    for j in range(0, len(ids), v.fanout):
        base = prev.base_for(0, j // v.fanout) if prev is not None else None
        leaves.append(tree.store_leaf(s, ids[j:j + v.fanout], base)[0])
    root, height, _ = tree.build(s, leaves, len(ids), v.fanout, prev)
    point = f"2026010{n}T000000Z-00{n:02d}"
    m = Manifest(point=point, vm="v", created=f"2026-01-0{n}T00:00:00.000Z", chunk_size=v.chunk_size,
                 disks=[DiskManifest("d", len(ids) * v.chunk_size, [], tree=root.hex() if root else None,
                                     tree_height=height)], format=FORMAT_DELTA, fanout=v.fanout)
    v.commit_point(m, {})
    return point


def test_gc_keeps_the_base_of_a_delta_after_the_point_that_wrote_it_is_pruned() -> None:
    v = open_vault()
    v.catalog.add_vm(VmRecord("v", "qmp", "/x", datetime.now(timezone.utc).isoformat(), {}))
    # a quarter of the chunks change (the leaf is a delta) and they hold most of the bytes (the pack is repacked):
    # the others compress to almost nothing
    a = [os.urandom(64 * KiB) if k % 4 == 0 else os.urandom(16) + bytes(64 * KiB - 16) for k in range(200)]
    b = [os.urandom(64 * KiB) if k % 4 == 0 else c for k, c in enumerate(a)]
    p1 = _commit(v, 1, a, None)
    prev = v.manifest(v.catalog.point("v", p1)).disks[0].chunks
    assert isinstance(prev, ChunkTree)
    p2 = _commit(v, 2, b, prev)
    m2 = v.manifest(v.catalog.point("v", p2))
    t2 = m2.disks[0].chunks
    assert isinstance(t2, ChunkTree) and t2.root is not None and tree.is_delta(v.chunks.get_blob(t2.root, NODE))
    assert [d.id for d in prune(v, "v", Retention(last=1)).decisions if not d.keep] == [p1]
    g = gc(v, grace=0)
    assert g.packs_repacked + g.packs_removed >= 1
    fresh = open_vault()
    m = fresh.manifest(fresh.catalog.point("v", p2))
    assert [fresh.chunks.get(c) for c in m.disks[0].chunks] == b
    assert verify(fresh, read_data=True).ok
