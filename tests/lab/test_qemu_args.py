"""How DiskSpec.extra options reach QEMU: device properties, protocol node, format node, or -drive."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutpoint.errors import UsageError
from cutpoint.lab.qemu_args import DiskSpec, disk_args


def test_blockdev_routing() -> None:
    args = disk_args(1, DiskSpec(1 << 20, extra="cache=none,serial=s1,read-only=on,file.locking=off"), Path("/d/x"))
    assert args == [
        "-blockdev", "driver=file,filename=/d/x,node-name=disk1-file,cache.direct=on,cache.no-flush=off,locking=off",
        "-blockdev", "driver=qcow2,file=disk1-file,node-name=disk1,cache.direct=on,cache.no-flush=off,read-only=on",
        "-device", "virtio-blk-pci,drive=disk1,id=disk1-dev,write-cache=on,serial=s1",
    ]


def test_drive_routing_and_commas_in_paths() -> None:
    args = disk_args(0, DiskSpec(1 << 20, fmt="raw", attach="drive", extra="cache=writeback,dev.discard=on"),
                     Path("/d/a,b"))
    assert args == ["-drive", "file=/d/a,,b,format=raw,if=none,id=drive-disk0,cache=writeback",
                    "-device", "virtio-blk-pci,drive=drive-disk0,discard=on"]


def test_bad_specs() -> None:
    with pytest.raises(UsageError, match="KEY=VALUE"):
        disk_args(0, DiskSpec(1 << 20, extra="cache"), Path("/x"))
    with pytest.raises(UsageError, match="cache='fast'"):
        disk_args(0, DiskSpec(1 << 20, extra="cache=fast"), Path("/x"))
    with pytest.raises(UsageError, match="format"):
        DiskSpec(1 << 20, fmt="vmdk").validate(0)
    with pytest.raises(UsageError, match="attach"):
        DiskSpec(1 << 20, attach="scsi").validate(0)
