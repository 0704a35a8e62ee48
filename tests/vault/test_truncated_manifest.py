"""A manifest cut short: verify names the point, restore of it fails with one line and writes nothing, gc refuses to
sweep (it cannot know what that point references) and deletes nothing, the next backup is full; pruning the point
makes the vault whole again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cutpoint.vault.prune import prune
from cutpoint.vault.retention import Retention
from tests.helpers import cutpoint
from tests.vault.util import (assert_sound, backup, change, gc, one_line_error, open_vault, restored,
                              stored_objects,
                              snapshot, two_disk_vm, vault_dir)


@pytest.mark.both_formats
def test_truncated_manifest(bare_qemu, tmp_path: Path) -> None:
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    change(vm, 0x21)
    p2 = backup()["point"]
    path = vault_dir() / "points" / "v" / f"{p2}.manifest"
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])

    r = cutpoint("verify", "--json")
    one_line_error(r, 6, "1 of 2 points failed", p2)
    states = {p["point"]: p for p in json.loads(r.out)["points"]}
    assert states[p1]["state"] == "ok" and states[p2]["state"] == "failed"
    assert f"manifest of point {p2} is damaged" in states[p2]["problems"][0]

    out = tmp_path / "r"
    one_line_error(cutpoint("restore", "v", p2, "--to", str(out)), 6, f"manifest of point {p2} is damaged")
    assert not out.exists() or list(out.iterdir()) == []
    assert restored(p1, tmp_path / "r1") == at_p1

    chunks = stored_objects()
    assert chunks
    one_line_error(cutpoint("gc", "--grace", "0"), 6, "gc stopped before deleting anything", p2)
    assert stored_objects() == chunks

    change(vm, 0x31)
    res = backup()
    assert res["mode"] == "full" and res["full_reason"] == "previous point failed verification"
    at_p3 = snapshot(images)
    v = open_vault()
    prune(v, "v", Retention(last=1))
    v.close()
    g = gc()
    assert g["removed_chunks"] > 0 or g["packs_removed"] + g["packs_repacked"] > 0, g
    assert_sound({res["point"]: at_p3}, tmp_path)
