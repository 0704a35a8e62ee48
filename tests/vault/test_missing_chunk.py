"""A chunk file deleted from the vault: the structure check (no data read) names it and the point and disk that
need it; other points stay ok; restore of the affected point fails with one line and leaves nothing; the next
backup does not build on the failed point."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import cutpoint
from tests.vault.util import (assert_sound, backup, change, chunk_of, chunk_path, one_line_error, restored,
                              snapshot, two_disk_vm)


def test_missing_chunk(bare_qemu, tmp_path: Path) -> None:
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    change(vm, 0x21)
    p2 = backup()["point"]
    at_p2 = snapshot(images)
    cid = chunk_of(p2, "db", 2)                          # written by p2 only
    chunk_path(cid).unlink()

    r = cutpoint("verify", "--json")
    one_line_error(r, 6, "1 of 2 points failed", p2)
    rep = json.loads(r.out)
    assert rep["level"] == "structure" and rep["bytes_read"] == 0
    assert rep["damaged_chunks"] == [{"id": cid, "problem": "is missing", "moved_aside": False,
                                      "affects": [{"point": p2, "vm": "v", "disk": "db", "chunks": [2]}]}]
    assert {p["point"]: p["state"] for p in rep["points"]} == {p1: "ok", p2: "failed"}

    out = tmp_path / "r"
    one_line_error(cutpoint("restore", "v", p2, "--to", str(out)), 6, "cannot restore disk db", "missing")
    assert list(out.iterdir()) == []
    assert restored(p1, tmp_path / "r1") == at_p1

    res = backup()
    assert res["mode"] == "full" and res["full_reason"] == "previous point failed verification"
    assert_sound({p1: at_p1, p2: at_p2, res["point"]: at_p2}, tmp_path)   # the rewrite healed p2
