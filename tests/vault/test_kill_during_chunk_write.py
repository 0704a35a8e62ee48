"""kill -9 of a backup half-way through writing a chunk file: no partial point, no torn chunk under a final name,
the committed point restores byte-identical, the leftover is gc's, and the next backup works."""

from __future__ import annotations

from pathlib import Path

from tests.vault.util import assert_sound, backup, change, files, gc, killed_at, snapshot, two_disk_vm


def test_kill_during_chunk_write(bare_qemu, tmp_path: Path) -> None:
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    chunks_before = files("chunks")
    change(vm, 0x31)

    killed_at("chunk-write", "backup", "v")

    torn = files("chunks", ".tmp-*")
    assert torn                                             # killed mid-write: a half chunk under a temporary name
    assert files("chunks") == sorted(chunks_before + torn)  # ... and no new chunk under a final name
    assert_sound({p1: at_p1}, tmp_path)                     # no partial point; p1 verifies and restores

    res = gc()
    assert res["removed_temp"] == len(torn) and res["removed_chunks"] == 0
    assert not files("chunks", ".tmp-*")
    assert not files("locks", "writer-*")                   # the dead backup's registration was cleared

    p2 = backup()
    assert_sound({p1: at_p1, p2["point"]: snapshot(images)}, tmp_path)
