"""kill -9 of a backup inside the catalog transaction that makes its point visible (the row is inserted, COMMIT
not reached): SQLite rolls it back, so the point does not exist; the catalog passes its integrity check, the earlier
point restores byte-identical, and the next backup works."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.helpers import cutpoint
from tests.vault.util import (assert_sound, backup, change, files, gc, killed_at, snapshot, two_disk_vm,
                              vault_dir, verified)


def test_kill_during_catalog_commit(bare_qemu, tmp_path: Path) -> None:
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    manifests_before = files("points")
    change(vm, 0x51)

    killed_at("catalog-commit", "backup", "v")

    orphan = sorted(set(files("points")) - set(manifests_before))
    assert len(orphan) == 1                             # everything up to the row was written ...
    dead_point = orphan[0].stem
    assert verified(read_data=False).catalog_problems == []   # the catalog is sound after the rollback
    db = sqlite3.connect(vault_dir() / "catalog.sqlite")
    assert db.execute("SELECT count(*) FROM points WHERE id=?", (dead_point,)).fetchone()[0] == 0
    db.close()
    assert dead_point not in cutpoint("points", "--json", check=True).out
    assert_sound({p1: at_p1}, tmp_path)                 # ... but the point is not there

    assert gc()["removed_manifests"] == 1
    p2 = backup()
    assert p2["point"] != dead_point
    assert_sound({p1: at_p1, p2["point"]: snapshot(images)}, tmp_path)
