"""kill -9 of gc in the middle of its sweep (after it deleted a first unreferenced chunk): the remaining point
verifies and restores byte-identical, the directory lock died with gc, and the next gc finishes the job."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutpoint.vault.prune import prune
from cutpoint.vault.retention import Retention
from tests.vault.util import (assert_sound, backup, change, files, gc, killed_at, open_vault, snapshot,
                              two_disk_vm, v3_vault)


def _pruned_chain(bare_qemu, tmp_path: Path):
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
    return vm, images, keep, at_keep


@pytest.mark.parametrize("stage", ["gc-repacked", "gc-index-written", "gc-sweep"])
def test_kill_during_gc_of_packs(bare_qemu, tmp_path: Path, stage: str) -> None:
    """Format v4: gc killed after copying live blobs into new packs, after writing the new index, and after its first
    pack deletion. Every step leaves the kept point whole, and the next gc finishes the job."""
    vm, images, keep, at_keep = _pruned_chain(bare_qemu, tmp_path)
    dry = gc_dry()
    assert dry["packs_seen"] >= 4
    assert dry["packs_repacked"] > 0 and dry["packs_removed"] > 0, dry     # each stage has work to be killed in
    killed_at(stage, "gc", "--grace", "0")
    assert_sound({keep: at_keep}, tmp_path)
    res = gc()                                              # not refused: the locks died with the process
    assert res["packs_removed"] + res["packs_repacked"] > 0, res
    again = gc()
    assert again["packs_removed"] == 0 and again["packs_repacked"] == 0, again
    assert not [p for p in (tmp_path / "vault").rglob(".tmp-*")]
    assert_sound({keep: at_keep}, tmp_path)
    change(vm, 0x91)
    p = backup()["point"]
    assert_sound({keep: at_keep, p: snapshot(images)}, tmp_path)


def gc_dry() -> dict:
    from cutpoint.vault.gc import gc as run_gc
    v = open_vault()
    try:
        return run_gc(v, dry_run=True, grace=0).to_json()
    finally:
        v.close()


def test_kill_during_gc(bare_qemu, tmp_path: Path) -> None:
    """Format v3 (a file per chunk): gc killed right after deleting its first chunk file."""
    v3_vault()
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
