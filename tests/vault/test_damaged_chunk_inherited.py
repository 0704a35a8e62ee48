"""A damaged chunk shared by an older and the latest point, found by a verify of the older point only: the latest
point has no verdict, so the next backup builds an incremental on it. That incremental must not inherit the id of the
chunk verify moved aside (it would reference a hole): it reads the chunk from the VM again and is whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vault.util import (assert_sound, backup, change, chunk_of, chunk_path, flip_chunk, open_vault, restored,
                              snapshot, two_disk_vm, vault_of_format, verified)


def _state(cid: str) -> str:
    v = open_vault()
    try:
        return v.chunks.state(cid)
    finally:
        v.close()


@pytest.mark.parametrize("fmt", [3, 4], ids=["v3", "v4"])
def test_damaged_chunk_inherited(bare_qemu, tmp_path: Path, monkeypatch, fmt: int) -> None:
    vault_of_format(fmt, monkeypatch)
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    change(vm, 0x21)                                     # touches da at 4-6 and 20-24 MiB, not chunk 0
    p2 = backup()["point"]
    at_p2 = snapshot(images)
    cid = chunk_of(p1, "da", 0)
    assert chunk_of(p2, "da", 0) == cid

    flip_chunk(cid)
    rep = verified(p1)                                   # only p1 is checked; p2 gets no verdict
    assert not rep.ok and [c.id for c in rep.damaged_chunks] == [cid]
    assert _state(cid) == "bad"                          # the damaged copy was set aside (v3: moved, v4: marked)
    if fmt == 3:
        assert not chunk_path(cid).exists()

    change(vm, 0x41)                                     # da chunk 0 is still unchanged since p2
    p3 = backup()
    assert p3["mode"] == "incremental" and p3["parent"] == p2
    da = next(d for d in p3["disks"] if d["name"] == "da")
    assert da["read_bytes"] > da["dirty_bytes"]          # chunk 0 read again although the bitmap says clean
    assert _state(cid) == "ok"                           # ... and stored afresh under its id
    at_p3 = snapshot(images)
    assert restored(p3["point"], tmp_path / "r3") == at_p3
    # the fresh copy heals the older points too: the whole vault verifies and restores
    assert_sound({p1: at_p1, p2: at_p2, p3["point"]: at_p3}, tmp_path)
