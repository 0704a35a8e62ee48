"""An index object is lost (deleted by hand, a damaged disk) after the point that wrote it was deleted, while a later
point still uses a chunk from that point's pack. gc must not take the pack for a killed writer's leftover: it adopts
it back into the index, and the later point stays whole."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from cutpoint.catalog.db import VmRecord
from tests.helpers import commit_synthetic_point, cutpoint
from tests.vault.util import files, gc, open_vault, points, protected_vault, read_back, verified


def test_gc_adopts_a_pack_whose_index_object_is_lost(tmp_path: Path) -> None:
    protected_vault(4, soft_delete_days=0)          # a deleted point's data is gc's at once
    v = open_vault()
    shared, own1, own2 = (os.urandom(v.chunk_size) for _ in range(3))
    v.catalog.add_vm(VmRecord("v", "qmp", "/nonexistent", "2023-01-01T00:00:00Z", {}))
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    commit_synthetic_point(v, "20230101T000000Z-0001", "v", now, {"d": [shared, own1]}, {})
    first_index, first_packs = files("index"), files("data")
    commit_synthetic_point(v, "20230101T000001Z-0002", "v", now, {"d": [shared, own2]}, {})  # shared: p1's pack
    v.close()
    cutpoint("delete", "20230101T000000Z-0001", check=True)
    assert len(first_index) == 1 and len(first_packs) == 1
    first_index[0].unlink()                         # the index object that listed p1's pack is lost

    dry = cutpoint("gc", "--grace", "0", "--dry-run", check=True).out
    assert "would take them back into the index" in dry and first_packs[0].exists(), dry
    res = gc()
    assert first_packs[0].exists(), res
    assert points() == ["20230101T000001Z-0002"]
    rep = verified()
    assert rep.ok, rep.to_json()
    assert read_back("20230101T000001Z-0002", tmp_path / "r1") == shared + own2
    assert res.get("packs_adopted") == 1, res
    again = gc()                    # listed again: not adopted twice; its dead chunk may now be repacked away
    assert again["packs_adopted"] == 0, again
    assert verified().ok
    assert read_back("20230101T000001Z-0002", tmp_path / "r2") == shared + own2
