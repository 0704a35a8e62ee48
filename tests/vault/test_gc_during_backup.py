"""gc runs while a backup is in flight (stopped after writing its chunks, before its commit point). The backup
wrote a new chunk and deduplicated against an old chunk that no visible point references any more: gc must keep
both (the first is younger than the running backup, the second was touched when reused) while it deletes real
garbage; the backup then commits and its point restores byte-identical."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from cutpoint.vault.prune import prune
from cutpoint.vault.retention import Retention
from tests.helpers import blockdev_args, guest_write, make_image
from tests.vault.util import (MiB, add_vm, assert_sound, backup, chunk_path, gc, open_vault, snapshot,
                              start_stopped, v3_vault)


def test_gc_during_backup(bare_qemu, tmp_path: Path) -> None:
    """Format v3: chunk files, their mtimes and touches."""
    v3_vault()
    a = make_image(tmp_path / "a.qcow2", "16M", writes=["write -P 0x11 0 4M", "write -P 0x22 8M 4M"])
    vm = bare_qemu(blockdev_args(a, "da"))
    add_vm("v", vm.qmp)
    backup()                                            # p1: chunks X (0x11) and G (0x22)
    guest_write(vm.qmp, "da-dev", "write -P 0x33 0 4M", "write -z 8M 4M")
    backup()                                            # p2: X and G replaced
    v = open_vault()
    prune(v, "v", Retention(last=1))                    # p1 gone: X and G referenced by nothing
    x, g, new = (v.chunks.chunk_id(bytes([b]) * (4 * MiB)) for b in (0x11, 0x22, 0x44))    # keyed ids (v3)
    v.close()
    old = time.time() - 3600
    for c in (x, g):
        os.utime(chunk_path(c), (old, old))             # and old: what gc deletes

    guest_write(vm.qmp, "da-dev", "write -P 0x11 0 4M", "write -P 0x44 4M 4M")   # X's content again, and a new N
    want = snapshot({"da": a})
    proc = start_stopped("after-chunks", "backup", "v", "--json")
    try:
        assert chunk_path(new).exists()                 # written by the running backup, referenced by no point
        res = gc()
        assert res["running_backups"] == ["backup v"]
        assert res["removed_chunks"] == 1 and not chunk_path(g).exists()    # real garbage goes ...
        assert chunk_path(x).exists() and chunk_path(new).exists()          # ... what the backup uses stays
        assert res["kept_young"] == 2
    finally:
        proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    p3 = __import__("json").loads(out)["point"]
    v = open_vault()
    prune(v, "v", Retention(last=1))
    v.close()
    assert gc()["removed_chunks"] == 1                  # p2's chunk; X and N are p3's now
    assert_sound({p3: want}, tmp_path)


def test_gc_during_backup_keeps_the_packs_it_relies_on(bare_qemu, tmp_path: Path) -> None:
    """Format v4: the same race. The old chunk the backup deduplicates against lives in an old pack that no visible
    point references; the backup registered that pack before relying on it, so gc keeps the pack (and the backup's
    own young pack) while deleting a pack that is really dead."""
    from cutpoint.vault.packfile import pack_name
    a = make_image(tmp_path / "a.qcow2", "16M", writes=["write -P 0x11 0 4M", "write -P 0x22 8M 4M"])
    vm = bare_qemu(blockdev_args(a, "da"))
    add_vm("v", vm.qmp)
    backup()                                            # p1: chunks X (0x11) and G (0x22), in pack P1
    guest_write(vm.qmp, "da-dev", "write -P 0x33 0 4M", "write -z 8M 4M")
    backup()                                            # p2: X and G replaced, in pack P2
    v = open_vault()
    prune(v, "v", Retention(last=1))                    # p1 gone: P1 referenced by nothing
    cs = v.chunk_size
    x, g = (v.chunks.chunk_id(bytes([b]) * cs) for b in (0x11, 0x22))
    p1_pack = tmp_path / "vault" / pack_name(v.chunks.location(x).pid)          # type: ignore[union-attr]
    assert v.chunks.location(g).pid == v.chunks.location(x).pid                # type: ignore[union-attr]
    v.close()
    old = time.time() - 3600
    os.utime(p1_pack, (old, old))                       # and old: what gc deletes
    guest_write(vm.qmp, "da-dev", "write -P 0x11 0 4M", "write -P 0x44 4M 4M")   # X's content again, and a new N
    want = snapshot({"da": a})
    proc = start_stopped("after-chunks", "backup", "v", "--json")
    try:
        v = open_vault()
        new = v.chunks.chunk_id(bytes([0x44]) * cs)
        assert v.chunks.has(new)                        # written by the running backup, referenced by no point
        v.close()
        res = gc()
        assert res["running_backups"] == ["backup v"]
        assert res["kept_relied"] == 1 and p1_pack.exists(), res     # the backup relies on X in P1
        assert res["packs_removed"] == 0
        v = open_vault()
        assert v.chunks.get(x) == bytes([0x11]) * cs and v.chunks.get(new) == bytes([0x44]) * cs
        v.close()
    finally:
        proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    p3 = __import__("json").loads(out)["point"]
    v = open_vault()
    prune(v, "v", Retention(last=1))
    v.close()
    res = gc()                                          # p2's pack is dead now; P1's G is dead, X is p3's
    assert res["packs_removed"] + res["packs_repacked"] >= 1, res
    assert_sound({p3: want}, tmp_path)


def test_gc_repacks_the_packs_a_running_incremental_inherits_from(bare_qemu, tmp_path: Path) -> None:
    """Format v4: an incremental inherits most of its chunks unread from its parent. gc repacks the packs that hold
    them while it is in flight (old and small: worth a rewrite); the blobs live on under the same ids in the new
    pack, and every point, the running one's included, restores byte-identical."""
    a = make_image(tmp_path / "a.qcow2", "16M", writes=["write -P 0x11 0 4M", "write -P 0x22 8M 4M"])
    vm = bare_qemu(blockdev_args(a, "da"))
    add_vm("v", vm.qmp)
    p1 = backup()["point"]
    at_p1 = snapshot({"da": a})
    guest_write(vm.qmp, "da-dev", "write -P 0x33 4M 1M")
    p2 = backup()["point"]
    at_p2 = snapshot({"da": a})
    old = time.time() - 3600
    packs = sorted((tmp_path / "vault" / "data").rglob("*"))
    packs = [p for p in packs if p.is_file()]
    assert len(packs) == 2
    for p in packs:
        os.utime(p, (old, old))                         # old enough for gc; both smaller than half a pack
    guest_write(vm.qmp, "da-dev", "write -P 0x44 12M 1M")
    want = snapshot({"da": a})
    proc = start_stopped("after-chunks", "backup", "v", "--json")
    try:
        res = gc()
        assert res["running_backups"] == ["backup v"]
        assert res["packs_repacked"] == 2 and res["packs_written"] >= 1, res
        assert not any(p.exists() for p in packs)       # the inherited blobs now live only in the new pack
    finally:
        proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    p3 = __import__("json").loads(out)
    assert p3["mode"] == "incremental", p3
    assert_sound({p1: at_p1, p2: at_p2, p3["point"]: want}, tmp_path)
