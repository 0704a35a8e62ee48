"""A pack lost from the storage (damage, a hand) whose blobs a later backup stored again: the index lists two copies
of each, and whichever index object is read first says which copy is *the* one. When that was the lost pack's, gc
judged the surviving copy dead and deleted or repacked it away, losing the blob a second time. gc now forgets the
lost pack's copies before it chooses (about half the time before, by index object names: both orders are tested)."""

from __future__ import annotations

import itertools
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cutpoint.catalog.db import VmRecord
from cutpoint.vault import packindex
from cutpoint.vault.blob import DATA, NODE
from cutpoint.vault.packfile import pack_name
from cutpoint.vault.vault import Vault
from tests.helpers import commit_synthetic_point
from tests.vault.util import age_packs, gc_now


@pytest.mark.parametrize("lost_listed_first", [True, False])
def test_gc_keeps_the_copy_left_of_a_lost_pack(tmp_path: Path, monkeypatch, lost_listed_first: bool) -> None:
    first, second = ("0" * 64, "f" * 64) if lost_listed_first else ("f" * 64, "0" * 64)
    names = itertools.chain([f"index/{first}", f"index/{second}"],
                            iter(lambda: "index/" + secrets.token_hex(32), None))
    monkeypatch.setattr(packindex, "new_index_name", lambda: next(names))
    root = tmp_path / "packed"
    Vault.create(root, version=4)
    v = Vault.open(root)
    v.catalog.add_vm(VmRecord("v", "qmp", "/x", datetime.now(timezone.utc).isoformat(), {}))
    x = os.urandom(64 * 1024)
    commit_synthetic_point(v, "20260101T000000Z-0001", "v", "2026-01-01T00:00:00Z", {"d": [x]})
    m = v.manifest(v.catalog.point("v", "20260101T000000Z-0001"))
    xid = v.chunks.bid(m.disks[0].chunks[0])
    leaf = bytes.fromhex(m.disks[0].tree)
    lost = v.chunks.location(xid.hex()).pid
    v.close()

    w = Vault.open(root)                       # what the next backup does once the pack is lost: stores x again
    for bid, kind in ((xid, DATA), (leaf, NODE)):
        loc = w.chunks.index().where[bid]
        w.chunks.put_stored(kind, bid, w.chunks.backend.get(pack_name(loc.pid), loc.offset, loc.length),
                            loc.raw_length)
    w.chunks.flush()
    w.close()
    (root / pack_name(lost)).unlink()
    age_packs(root, 5000)
    gc_now(root)
    r = Vault.open(root)
    try:
        assert r.chunks.get(xid.hex()) == x
    finally:
        r.close()
