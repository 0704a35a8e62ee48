"""Every way the bitmap chain can break is detected for real and gives a full point with the reason recorded, never
a silently wrong incremental. Each point is checked against the disk as it was at the cut."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from cutpoint.drivers.qmp.qmp import QmpSession
from tests.helpers import blockdev_args, cutpoint, drive_args, guest_write, make_image, raw_bytes


def _backup() -> dict:
    return json.loads(cutpoint("backup", "v", "--json", check=True).out)


def _restored(point: str, to: Path) -> dict[str, bytes]:
    out = json.loads(cutpoint("restore", "v", point, "--to", str(to), "--json", check=True).out)
    return {f["disk"]: Path(f["path"]).read_bytes() for f in out["files"]}


def _disk_reasons(res: dict) -> dict[str, str]:
    return {d["name"]: d["mode"] for d in res["disks"]}


def _two_disks(tmp_path: Path):
    a = make_image(tmp_path / "a.qcow2", "32M", writes=["write -P 0x5a 0 4M"])
    b = make_image(tmp_path / "b.raw", "32M", "raw", writes=["write -P 0x6b 0 4M"])
    return a, b, blockdev_args(a, "da") + drive_args(b, "db", "raw")


def test_restart_clean_keeps_qcow2_bitmap_loses_raw(bare_qemu, tmp_path: Path) -> None:
    a, b, args = _two_disks(tmp_path)
    vm = bare_qemu(args)
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    _backup()
    vm.quit()                                 # clean shutdown: persistent (qcow2) bitmaps are saved in the image
    vm = bare_qemu(args)
    guest_write(vm.qmp, "da-dev", "write -P 0x01 8M 1M")
    guest_write(vm.qmp, "db", "write -P 0x02 8M 1M")
    res = _backup()
    assert res["mode"] == "full"
    assert "db:" in res["full_reason"] and "missing" in res["full_reason"] and "da:" not in res["full_reason"]
    assert _disk_reasons(res) == {"da": "incremental", "db": "full"}
    assert _restored(res["point"], tmp_path / "r") == {"da": raw_bytes(a), "db": raw_bytes(b)}


def test_restart_after_crash_marks_bitmap_inconsistent(bare_qemu, tmp_path: Path) -> None:
    a, b, args = _two_disks(tmp_path)
    vm = bare_qemu(args)
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    _backup()
    vm.quit()                                 # the bitmap is stored in the qcow2 image ...
    vm = bare_qemu(args)                      # ... loaded again and flagged in use while QEMU runs ...
    with QmpSession(vm.qmp) as s:             # (QMP answers once the images are open: no kill before that)
        s.cmd("query-block")
    vm.proc.send_signal(signal.SIGKILL)       # ... and left flagged by a crash
    vm.proc.wait(10)
    vm = bare_qemu(args)
    guest_write(vm.qmp, "da-dev", "write -P 0x03 9M 1M")
    res = _backup()
    assert res["mode"] == "full" and "inconsistent" in res["full_reason"] and "da:" in res["full_reason"]
    assert _restored(res["point"], tmp_path / "r") == {"da": raw_bytes(a), "db": raw_bytes(b)}


def test_resize(bare_qemu, tmp_path: Path) -> None:
    a, b, args = _two_disks(tmp_path)
    vm = bare_qemu(args)
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    _backup()
    with QmpSession(vm.qmp) as s:
        s.cmd("block_resize", node_name="da", size=48 << 20)
    guest_write(vm.qmp, "da-dev", "write -P 0x04 40M 1M")
    res = _backup()
    assert res["full_reason"] == f"da: disk da was resized from {32 << 20} to {48 << 20} bytes"
    assert _disk_reasons(res) == {"da": "full", "db": "incremental"}
    disks = {d["name"]: d for d in res["disks"]}
    assert disks["da"]["size"] == 48 << 20
    assert _restored(res["point"], tmp_path / "r") == {"da": raw_bytes(a), "db": raw_bytes(b)}


def test_hot_added_disk(bare_qemu, tmp_path: Path) -> None:
    a, b, args = _two_disks(tmp_path)
    c = make_image(tmp_path / "c.qcow2", "16M", writes=["write -P 0x7c 0 2M"])
    vm = bare_qemu(args + ["-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1"])
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    first = _backup()
    with QmpSession(vm.qmp) as s:
        s.cmd("blockdev-add", driver="qcow2", node_name="dc",
              file={"driver": "file", "filename": str(c)})
        s.cmd("device_add", driver="virtio-blk-pci", drive="dc", id="dc-dev", bus="rp1")
    res = _backup()
    assert res["full_reason"] == f"dc: disk dc is new since point {first['point']}"
    assert _disk_reasons(res) == {"da": "incremental", "db": "incremental", "dc": "full"}
    assert _restored(res["point"], tmp_path / "r") == {"da": raw_bytes(a), "db": raw_bytes(b), "dc": raw_bytes(c)}


def test_newest_point_deleted(bare_qemu, tmp_path: Path) -> None:
    import os

    from cutpoint.vault.vault import Vault

    a, b, args = _two_disks(tmp_path)
    vm = bare_qemu(args)
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    _backup()
    second = _backup()
    vault = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    vault.catalog.remove_point(second["point"])     # what forgetting the newest point does to the catalog
    vault.close()
    guest_write(vm.qmp, "da-dev", "write -P 0x05 2M 1M")
    # this host committed that point: its absence is a rollback until accepted deliberately (docs/format.md §8)
    r = cutpoint("backup", "v")
    assert r.code == 6 and "rolled back" in r.err and "vault trust" in r.err, r.err
    cutpoint("vault", "trust", check=True)
    res = _backup()
    assert res["mode"] == "full" and "no longer exists" in res["full_reason"]
    assert _restored(res["point"], tmp_path / "r") == {"da": raw_bytes(a), "db": raw_bytes(b)}
    # and the chain is whole again afterwards
    assert _backup()["mode"] == "incremental"


def test_disk_replaced(bare_qemu, tmp_path: Path) -> None:
    a, b, args = _two_disks(tmp_path)
    vm = bare_qemu(args)
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    _backup()
    vm.quit()
    other = make_image(tmp_path / "other.qcow2", "32M", writes=["write -P 0x99 0 1M"])
    vm = bare_qemu(blockdev_args(other, "da") + drive_args(b, "db", "raw"))
    res = _backup()
    assert res["mode"] == "full" and f"replaced ({a} -> {other})" in res["full_reason"]
    assert _restored(res["point"], tmp_path / "r") == {"da": raw_bytes(other), "db": raw_bytes(b)}


def test_disk_removed(bare_qemu, tmp_path: Path) -> None:
    """A disk gone since the previous point: the others stay incremental, the point says which disk it lacks."""
    a, b, args = _two_disks(tmp_path)
    vm = bare_qemu(args)
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    p1 = _backup()["point"]
    vm.quit()
    vm = bare_qemu(blockdev_args(a, "da"))
    guest_write(vm.qmp, "da-dev", "write -P 0x03 8M 1M")
    res = _backup()
    assert res["mode"] == "incremental" and [d["name"] for d in res["disks"]] == ["da"]
    assert any("db" in w and p1 in w and "no longer attached" in w for w in res["warnings"]), res["warnings"]
    assert _restored(res["point"], tmp_path / "r") == {"da": raw_bytes(a)}
