"""kill -9 of prune inside its catalog transaction (nothing is forgotten) and right after it (the points are gone,
their manifests not yet deleted): the vault verifies clean either way, every visible point restores byte-identical,
and gc then reclaims the orphans and the pruned points' chunks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vault.util import (assert_sound, backup, change, files, gc, killed_at, points, snapshot, two_disk_vm,
                              vault_version)


@pytest.mark.both_formats
def test_kill_during_prune(bare_qemu, tmp_path: Path) -> None:
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    expected: dict[str, dict[str, bytes]] = {}
    for seed in (0x21, 0x31, 0x41):
        change(vm, seed)
        expected[backup()["point"]] = snapshot(images)
    p1, p2, p3 = expected

    killed_at("prune-commit", "prune", "v", "--keep-last", "1")        # inside the transaction: rolled back
    assert points() == [p1, p2, p3]
    assert_sound(expected, tmp_path)

    killed_at("after-prune-commit", "prune", "v", "--keep-last", "1")  # committed; manifests still on disk
    assert points() == [p3]
    assert len(files("points", "*.manifest")) == 3
    assert_sound({p3: expected[p3]}, tmp_path)

    res = gc()
    assert res["removed_manifests"] == 2 and res["removed_chunks"] > 0 and res["freed_bytes"] > 0
    if vault_version() < 4:
        assert len(files("chunks")) == res["chunks_seen"] - res["removed_chunks"]
    else:                          # the pruned points' packs: deleted, or their live blobs repacked
        assert res["packs_removed"] + res["packs_repacked"] > 0
    assert [p.stem for p in files("points", "*.manifest")] == [p3]
    assert_sound({p3: expected[p3]}, tmp_path)
