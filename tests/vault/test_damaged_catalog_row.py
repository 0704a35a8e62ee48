"""Damaged catalog rows: a row naming another point's manifest and a row whose JSON summary is garbage. Listing
still works; verify names both points and records them failed; restore of the first fails with one line instead of
writing the other point's disks; the intact point restores byte-identical; the next backup is full."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.helpers import cutpoint
from tests.vault.util import (backup, change, one_line_error, open_vault, restored, snapshot, two_disk_vm,
                              vault_dir)


def test_damaged_catalog_row(bare_qemu, tmp_path: Path) -> None:
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    change(vm, 0x21)
    p2 = backup()["point"]
    change(vm, 0x31)
    p3 = backup()["point"]
    db = sqlite3.connect(vault_dir() / "catalog.sqlite")
    with db:
        db.execute("UPDATE points SET manifest=(SELECT manifest FROM points WHERE id=?) WHERE id=?", (p1, p2))
        db.execute("UPDATE points SET summary='{\"point\": \"' WHERE id=?", (p3,))
    db.close()

    listed = cutpoint("points", "v", "--json", check=True)
    assert len(json.loads(listed.out)) == 3

    r = cutpoint("verify", "--json")
    one_line_error(r, 6, "2 of 3 points failed", p2, p3)
    states = {p["point"]: p for p in json.loads(r.out)["points"]}
    assert states[p1]["state"] == "ok"
    assert f"catalog row of point {p2} is damaged" in states[p2]["problems"][0]
    assert "summary is not valid JSON" in " ".join(states[p3]["problems"])
    v = open_vault()
    assert v.catalog.verified(p2).state == "failed" and v.catalog.verified(p1).state == "ok"
    v.close()

    out = tmp_path / "r"
    one_line_error(cutpoint("restore", "v", p2, "--to", str(out)), 6, f"catalog row of point {p2} is damaged")
    assert not out.exists() or list(out.iterdir()) == []
    assert restored(p1, tmp_path / "r1") == at_p1

    res = backup()
    assert res["mode"] == "full" and res["full_reason"] == "previous point failed verification"
