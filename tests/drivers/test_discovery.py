"""Disk discovery over QMP for -blockdev and legacy -drive disks, skipping CD-ROMs and empty drives."""

from __future__ import annotations

from pathlib import Path

from cutpoint.drivers.qmp.disks import discover
from cutpoint.drivers.qmp.qmp import QmpSession
from tests.helpers import blockdev_args, drive_args, make_image


def test_blockdev_and_drive_disks_found_cdrom_skipped(bare_qemu, tmp_path: Path) -> None:
    a = make_image(tmp_path / "a.qcow2", "64M")
    b = make_image(tmp_path / "b.raw", "32M", "raw")
    vm = bare_qemu(blockdev_args(a, "sys") + drive_args(b, "data", "raw", "cache=writeback")
                   + ["-drive", "if=none,id=cd0,media=cdrom", "-device", "ide-cd,drive=cd0"])
    with QmpSession(vm.qmp) as s:
        inv = discover(s)
    by_name = {d.name: d for d in inv.disks}
    assert set(by_name) == {"sys", "data"}
    assert by_name["sys"].node == "sys" and by_name["sys"].driver == "qcow2" and by_name["sys"].size == 64 << 20
    # legacy -drive: QEMU generated the node name; the drive id is the stable name
    assert by_name["data"].node.startswith("#") and by_name["data"].driver == "raw"
    assert by_name["data"].size == 32 << 20 and by_name["data"].cache["writeback"] is True
    assert [(k.name, k.reason) for k in inv.skipped] == [("cd0", "CD-ROM drive (empty)")]
