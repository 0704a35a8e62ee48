"""SIGTERM to a backup while it reads: it stops, cleans up in QEMU (no export, job, overlay; the previous bitmap
records again with the dead cut's changes merged in), leaves no point and no work files, and exits 143."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from cutpoint.drivers.qmp.disks import discover
from cutpoint.drivers.qmp.qmp import QmpSession
from cutpoint.paths import work_home
from tests.helpers import assert_clean
from tests.vault.util import assert_sound, backup, change, points, snapshot, start_stopped, two_disk_vm


def test_sigterm_during_backup(bare_qemu, tmp_path: Path) -> None:
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    change(vm, 0x51)

    p = start_stopped("chunk-write", "backup", "v")        # held after its cut, half-way through a chunk
    os.kill(p.pid, signal.SIGTERM)
    os.kill(p.pid, signal.SIGCONT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 143 and "terminated" in err, (p.returncode, err)

    assert points() == [p1]
    with QmpSession(vm.qmp) as s:
        db_node = next(d.node for d in discover(s).disks if d.name == "db")
    assert_clean(vm.qmp, work_home(), {"da": ["cutpoint-" + p1], db_node: ["cutpoint-" + p1]})

    p2 = backup()
    assert p2["mode"] == "incremental" and p2["parent"] == p1
    assert_sound({p1: at_p1, p2["point"]: snapshot(images)}, tmp_path)


def test_sigterm_during_cleanup_waits_for_it(bare_qemu, tmp_path: Path) -> None:
    """A SIGTERM that lands while the backup releases its cut is held until the release is complete; the point was
    committed before it, so the backup ends as the success it is, and says the signal came late."""
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    change(vm, 0x61)
    at_p2 = snapshot(images)
    p = start_stopped("cleanup", "backup", "v")             # the point is committed; the cut not yet released
    os.kill(p.pid, signal.SIGTERM)
    os.kill(p.pid, signal.SIGCONT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and "SIGTERM came after the work was done" in err, (p.returncode, err)
    first, p2 = points()
    assert p2 in out
    assert first == p1
    with QmpSession(vm.qmp) as s:
        db_node = next(d.node for d in discover(s).disks if d.name == "db")
    assert_clean(vm.qmp, work_home(), {"da": ["cutpoint-" + p2], db_node: ["cutpoint-" + p2]})   # released whole
    assert_sound({p1: at_p1, p2: at_p2}, tmp_path)
