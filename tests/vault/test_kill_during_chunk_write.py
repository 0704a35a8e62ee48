"""kill -9 of a backup while it writes its chunks: v3, half-way through a chunk file; v4, right after a pack is
written (and, separately, after the packs are synced but before the index that lists them). No partial point, no
torn object under a final name, the committed point restores byte-identical, the leftover is gc's, and the next
backup works."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vault.util import assert_sound, backup, change, files, gc, killed_at, snapshot, two_disk_vm, vault_version


@pytest.mark.both_formats
def test_kill_during_chunk_write(bare_qemu, tmp_path: Path) -> None:
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    change(vm, 0x31)
    if vault_version() < 4:
        chunks_before = files("chunks")
        killed_at("chunk-write", "backup", "v")
        torn = files("chunks", ".tmp-*")
        assert torn                                             # killed mid-write: a half chunk under a temporary name
        assert files("chunks") == sorted(chunks_before + torn)  # ... and no new chunk under a final name
        assert_sound({p1: at_p1}, tmp_path)                     # no partial point; p1 verifies and restores
        res = gc()
        assert res["removed_temp"] == len(torn) and res["removed_chunks"] == 0
        assert not files("chunks", ".tmp-*")
    else:
        _kill_v4("pack-written", p1, at_p1, tmp_path)
        _kill_v4("after-packs", p1, at_p1, tmp_path)
    assert not files("locks", "writer-*")                       # the dead backup's registration was cleared
    p2 = backup()
    assert_sound({p1: at_p1, p2["point"]: snapshot(images)}, tmp_path)


def _kill_v4(stage: str, p1: str, at_p1: dict[str, bytes], tmp_path: Path) -> None:
    packs, index = files("data"), files("index")
    killed_at(stage, "backup", "v")
    new = sorted(set(files("data")) - set(packs))
    assert new, stage                                           # the pack is there under its final name ...
    assert files("index") == index                              # ... but no index lists it: no point can use it
    assert not [p for p in (tmp_path / "vault").rglob(".tmp-*")]
    assert_sound({p1: at_p1}, tmp_path)
    res = gc()
    assert res["packs_removed"] == len(new) and res["removed_chunks"] == 0, res
    assert files("data") == packs


def test_kill_mid_pack_put(bare_qemu, tmp_path: Path) -> None:
    """kill -9 while a pack is written under its temporary name (format v4, a local vault): the half pack is hidden
    from every listing, so only gc can ever remove it, and gc does; nothing else changes."""
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    change(vm, 0x32)
    packs, index = files("data"), files("index")
    killed_at("object-write", "backup", "v")
    torn = [p for p in (tmp_path / "vault").rglob(".tmp-*")]
    assert torn and all(p.is_relative_to(tmp_path / "vault" / "data") for p in torn), torn
    assert files("data", "[!.]*") == packs and files("index") == index    # nothing new under a final name
    assert_sound({p1: at_p1}, tmp_path)
    res = gc()
    assert res["removed_temp"] == len(torn) and res["packs_removed"] == 0, res
    assert not [p for p in (tmp_path / "vault").rglob(".tmp-*")]
    assert files("data") == packs
    p2 = backup()
    assert_sound({p1: at_p1, p2["point"]: snapshot(images)}, tmp_path)
