"""A stored chunk lost from the vault (v3: its file; v4: the whole pack that held it, the unit an object store
loses): the structure check (no data read) names what is gone and the point and disk that need it; other points
stay ok; restore of the affected point fails with one line and leaves nothing; the next backup does not build on
the failed point, and its rewrite heals it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cutpoint
from tests.vault.util import (assert_sound, backup, change, chunk_of, lose_chunk, one_line_error, restored,
                              snapshot, two_disk_vm, vault_version)


@pytest.mark.both_formats
def test_missing_chunk(bare_qemu, tmp_path: Path) -> None:
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    change(vm, 0x21)
    p2 = backup()["point"]
    at_p2 = snapshot(images)
    cid = chunk_of(p2, "db", (8 << 20) // _chunk_size())          # written by p2 only (db 8M..9M)
    lost = lose_chunk(cid)

    r = cutpoint("verify", "--json")
    one_line_error(r, 6, "1 of 2 points failed", p2)
    rep = json.loads(r.out)
    assert rep["level"] == "structure" and rep["bytes_read"] == 0
    assert {p["point"]: p["state"] for p in rep["points"]} == {p1: "ok", p2: "failed"}
    if vault_version() < 4:
        assert rep["damaged_chunks"] == [{"id": cid, "problem": "is missing", "moved_aside": False,
                                          "affects": [{"point": p2, "vm": "v", "disk": "db", "chunks": [2]}]}]
    else:
        # the pack held p2's new chunks and the index nodes above them: the point's index is incomplete
        [verdict] = [p for p in rep["points"] if p["point"] == p2]
        assert any("index node" in x and "missing" in x for x in verdict["problems"]), verdict
        assert cid in lost and all(c["problem"] == "is missing" for c in rep["damaged_chunks"])

    out = tmp_path / "r"
    one_line_error(cutpoint("restore", "v", p2, "--to", str(out)), 6, "cannot restore disk", "missing")
    assert list(out.iterdir()) == []
    assert restored(p1, tmp_path / "r1") == at_p1

    res = backup()
    assert res["mode"] == "full" and res["full_reason"] == "previous point failed verification"
    assert_sound({p1: at_p1, p2: at_p2, res["point"]: at_p2}, tmp_path)   # the rewrite healed p2


def _chunk_size() -> int:
    from tests.vault.util import open_vault
    v = open_vault()
    try:
        return v.chunk_size
    finally:
        v.close()
