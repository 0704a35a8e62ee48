"""A VM's disks are read at once, each over its own NBD connection through one pool of workers; when one disk fails,
the others stop and the backup reports that disk's error, with no point and a clean VM."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cutpoint.backup.run import BackupOptions, backup
from cutpoint.errors import CutpointError
from cutpoint.paths import work_home
from tests.helpers import assert_clean
from tests.vault.util import open_vault, points, restored, snapshot, two_disk_vm


def test_the_second_disk_is_read_while_the_first_is_still_being_read(bare_qemu, tmp_path: Path) -> None:
    """The first progress report, whichever disk makes it, waits until the other disk has reported progress: read
    one after the other, the other disk would not start and the wait would time out."""
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    seen: dict[str, threading.Event] = {"da": threading.Event(), "db": threading.Event()}
    waited: list[bool] = []

    def progress(name: str, done: int, total: int) -> None:
        other = "db" if name == "da" else "da"
        seen[name].set()
        if not waited:
            waited.append(seen[other].wait(timeout=20))

    v = open_vault()
    try:
        res = backup(v, "v", BackupOptions(progress=progress))
    finally:
        v.close()
    assert waited and all(waited), "the disks were read one after the other"
    assert {d.name for d in res.disks} == {"da", "db"}
    assert restored(res.point, tmp_path / "out") == snapshot(images)


def test_a_failing_disk_stops_the_others_and_is_what_the_backup_reports(bare_qemu, tmp_path: Path) -> None:
    vm, _ = two_disk_vm(bare_qemu, tmp_path)
    after: list[str] = []

    class DiskBroke(CutpointError):
        """The fault seam: disk db's read fails after its first run."""

    def progress(name: str, done: int, total: int) -> None:
        if after:
            after.append(name)                 # a disk that goes on after the failure
        if name == "db" and not after:
            after.append("failed")
            raise DiskBroke("db: read failed")

    v = open_vault()
    try:
        with pytest.raises(DiskBroke, match="db: read failed"):
            backup(v, "v", BackupOptions(progress=progress))
    finally:
        v.close()
    assert after.count("da") <= 1, after      # da stops at its next run (a run in flight may still report)
    assert points() == []
    assert_clean(vm.qmp, work_home(), {})


@pytest.mark.parametrize("broken,other", [("db", "da"), ("da", "db")])
def test_a_knock_on_failure_of_another_disk_does_not_hide_the_first(bare_qemu, tmp_path: Path, broken: str,
                                                                    other: str) -> None:
    """One disk fails first; the other fails a moment later because of it (as a pack write's failure makes every
    later store refuse). The backup reports the first error, whichever disk comes first in the VM's order."""
    vm, _ = two_disk_vm(bare_qemu, tmp_path)
    other_in, broken_raised = threading.Event(), threading.Event()

    class DiskBroke(CutpointError):
        """The fault seam: the broken disk's read fails."""

    class KnockOn(CutpointError):
        """The other disk's failure, caused by the first."""

    def progress(name: str, done: int, total: int) -> None:
        if name == other and not other_in.is_set():
            other_in.set()
            broken_raised.wait(timeout=20)
            time.sleep(0.5)                    # the broken disk's error reaches the backup first
            raise KnockOn(f"{other}: store refused after {broken}'s failure")
        if name == broken and not broken_raised.is_set():
            other_in.wait(timeout=20)
            broken_raised.set()
            raise DiskBroke(f"{broken}: read failed")

    v = open_vault()
    try:
        with pytest.raises(DiskBroke, match=f"{broken}: read failed"):
            backup(v, "v", BackupOptions(progress=progress))
    finally:
        v.close()
    assert points() == []
    assert_clean(vm.qmp, work_home(), {})
