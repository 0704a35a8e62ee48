"""kill -9 of a backup after its cut, half-way through reading: the next backup is still an incremental of the last
good point, and complete. Writes made before the dead cut sit in the previous point's (now disabled) bitmap, writes
made after it in the dead run's bitmap; the next backup merges both, so nothing written since the last good point is
missed. Checked by restoring every point and comparing it with the disks."""

from __future__ import annotations

from pathlib import Path

from cutpoint.drivers.qmp.disks import discover
from cutpoint.drivers.qmp.qmp import QmpSession
from cutpoint.paths import work_home
from tests.helpers import assert_clean, guest_write, qemu_state
from tests.vault.util import MiB, assert_sound, backup, change, killed_at, snapshot, two_disk_vm


def test_kill_mid_read(bare_qemu, tmp_path: Path) -> None:
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    change(vm, 0x31)                                       # before the dead cut: da 4M+2M, 20M+4M; db 8M+1M

    killed_at("chunk-write", "backup", "v")                # cut taken, reading, killed mid-chunk
    st = qemu_state(vm.qmp)
    assert st["exports"] and st["fleece_nodes"]             # it really died between its cut and its cleanup
    guest_write(vm.qmp, "da-dev", "write -P 0x77 28M 1M")   # after the dead cut: only its own bitmap saw these
    guest_write(vm.qmp, "db", "write -P 0x78 14M 512k")

    p2 = backup()
    assert p2["mode"] == "incremental" and p2["parent"] == p1, p2["full_reason"]
    dirty = {d["name"]: d["dirty_bytes"] for d in p2["disks"]}
    assert dirty["da"] >= 6 * MiB + 1 * MiB and dirty["db"] >= 1 * MiB + 512 * 1024
    assert_sound({p1: at_p1, p2["point"]: snapshot(images)}, tmp_path)
    with QmpSession(vm.qmp) as s:
        db_node = next(d.node for d in discover(s).disks if d.name == "db")
    assert_clean(vm.qmp, work_home(), {"da": ["cutpoint-" + p2["point"]], db_node: ["cutpoint-" + p2["point"]]})
