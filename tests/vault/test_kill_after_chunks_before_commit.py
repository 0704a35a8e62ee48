"""kill -9 of a backup after its chunks are durable, before its commit point (without and with its manifest): the
point never shows, the vault verifies clean, the earlier point restores byte-identical, gc reclaims exactly the
dead backup's chunks (and manifest), and the next backup works."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vault.util import (assert_sound, backup, change, files, gc, killed_at, snapshot, stored_objects,
                              two_disk_vm, vault_version)


@pytest.mark.both_formats
@pytest.mark.parametrize("stage", ["after-chunks", "after-manifest"])
def test_kill_after_chunks_before_commit(bare_qemu, tmp_path: Path, stage: str) -> None:
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    chunks_before = stored_objects()                    # chunk files (v3) or packs (v4)
    manifests_before = files("points")
    change(vm, 0x41)

    killed_at(stage, "backup", "v")

    new_chunks = sorted(set(stored_objects()) - set(chunks_before))
    orphans = sorted(set(files("points")) - set(manifests_before))
    assert new_chunks                                   # the chunks were written ...
    assert len(orphans) == (1 if stage == "after-manifest" else 0)
    assert_sound({p1: at_p1}, tmp_path)                 # ... but no point shows, and p1 is whole

    res = gc()
    if vault_version() < 4:
        assert res["removed_chunks"] == len(new_chunks)
    else:                                               # indexed packs nothing references: deleted whole
        assert res["packs_removed"] == len(new_chunks) and res["removed_chunks"] > 0
    assert res["removed_manifests"] == len(orphans)
    assert stored_objects() == chunks_before and files("points") == manifests_before
    assert_sound({p1: at_p1}, tmp_path)

    p2 = backup()["point"]
    assert_sound({p1: at_p1, p2: snapshot(images)}, tmp_path)
