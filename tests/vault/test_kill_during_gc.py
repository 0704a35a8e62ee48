"""kill -9 of gc in the middle of its sweep (after it deleted a first unreferenced chunk): the remaining point
verifies and restores byte-identical, the directory lock died with gc, and the next gc finishes the job."""

from __future__ import annotations

from pathlib import Path

from cutpoint.vault.prune import prune
from cutpoint.vault.retention import Retention
from tests.vault.util import (assert_sound, backup, change, files, gc, killed_at, open_vault, snapshot,
                              two_disk_vm)


def test_kill_during_gc(bare_qemu, tmp_path: Path) -> None:
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    backup()
    for seed in (0x61, 0x71):
        change(vm, seed)
        backup()
    change(vm, 0x81)
    keep = backup()["point"]
    at_keep = snapshot(images)
    v = open_vault()
    prune(v, "v", Retention(last=1))
    v.close()
    before = len(files("chunks"))

    killed_at("gc-sweep", "gc", "--grace", "0")

    assert len(files("chunks")) == before - 1              # killed right after its first deletion
    assert_sound({keep: at_keep}, tmp_path)

    res = gc()                                              # not refused: the lock died with the process
    assert res["removed_chunks"] > 0 and res["removed_manifests"] == 0
    assert len(files("chunks")) == before - 1 - res["removed_chunks"]
    assert gc()["removed_chunks"] == 0
    assert_sound({keep: at_keep}, tmp_path)
    change(vm, 0x91)
    p = backup()["point"]
    assert_sound({keep: at_keep, p: snapshot(images)}, tmp_path)
