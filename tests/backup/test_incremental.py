"""Incremental forever: after writing X bytes between points, the next backup reads about X bytes from the VM, and
every point still restores byte-identical to the disk at its cut."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import blockdev_args, cutpoint, drive_args, guest_write, make_image, raw_bytes

MiB = 1 << 20
GRAIN = 64 << 10  # dirty bitmap granularity QEMU picks for these images


def _restore_all(point: str, to: Path) -> dict[str, bytes]:
    out = json.loads(cutpoint("restore", "v", point, "--to", str(to), "--json", check=True).out)
    return {f["disk"]: Path(f["path"]).read_bytes() for f in out["files"]}


def test_incremental_reads_what_changed(bare_qemu, tmp_path: Path) -> None:
    a = make_image(tmp_path / "a.qcow2", "64M", writes=["write -P 0x5a 0 24M"])
    b = make_image(tmp_path / "b.raw", "32M", "raw", writes=["write -P 0x6b 0 8M"])
    vm = bare_qemu(blockdev_args(a, "da") + drive_args(b, "db", "raw"))
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    full = json.loads(cutpoint("backup", "v", "--json", check=True).out)
    assert full["mode"] == "full" and full["full_reason"] == "first backup"
    at_full = {"da": raw_bytes(a), "db": raw_bytes(b)}

    # 1 MiB + 3 scattered 4 KiB writes on da (each dirties one 64 KiB grain), 2 MiB on db
    guest_write(vm.qmp, "da-dev", "write -P 0x01 10M 1M", "write -P 0x02 30M 4k", "write -P 0x03 40M 4k",
                "write -P 0x04 63M 4k")
    guest_write(vm.qmp, "db", "write -P 0x05 4M 2M")
    inc = json.loads(cutpoint("backup", "v", "--json", check=True).out)
    assert inc["mode"] == "incremental" and inc["full_reason"] is None and inc["parent"] == full["point"]
    disks = {d["name"]: d for d in inc["disks"]}
    assert disks["da"]["dirty_bytes"] == 1 * MiB + 3 * GRAIN
    assert disks["da"]["read_bytes"] == disks["da"]["dirty_bytes"]
    assert disks["db"]["dirty_bytes"] == 2 * MiB and disks["db"]["read_bytes"] == 2 * MiB
    at_inc = {"da": raw_bytes(a), "db": raw_bytes(b)}
    assert at_inc != at_full

    # an unchanged VM: nothing to read, nothing to store
    empty = json.loads(cutpoint("backup", "v", "--json", check=True).out)
    assert empty["mode"] == "incremental"
    assert all(d["read_bytes"] == 0 and d["stored_bytes"] == 0 for d in empty["disks"])

    assert _restore_all(full["point"], tmp_path / "r1") == at_full
    assert _restore_all(inc["point"], tmp_path / "r2") == at_inc
    assert _restore_all(empty["point"], tmp_path / "r3") == at_inc
