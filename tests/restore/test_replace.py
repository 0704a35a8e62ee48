"""--replace: the stopped VM's own disks become byte-identical to the point, writing only the chunks that differ."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cutpoint.errors import UsageError
from cutpoint.restore.launch import running_reason
from cutpoint.restore.replace import _prepare
from tests.helpers import blockdev_args, cutpoint, drive_args, guest_write, make_image, raw_bytes


def _one_line_error(r, code: int, *needles: str) -> None:
    assert r.code == code, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cutpoint: error: "), r.err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.both_formats
def test_replace_writes_only_what_changed(bare_qemu, tmp_path: Path, vault_format: int) -> None:
    a = make_image(tmp_path / "a.qcow2", "32M", writes=["write -P 0xab 0 20M"])
    b = make_image(tmp_path / "b.raw", "16M", "raw", writes=["write -P 0xcd 1M 6M"])
    args = blockdev_args(a, "da") + drive_args(b, "db", "raw")
    vm = bare_qemu(args)
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    point = json.loads(cutpoint("backup", "v", "--json", check=True).out)["point"]
    ref = tmp_path / "ref"
    cutpoint("restore", "v", point, "--to", str(ref), check=True)
    guest_write(vm.qmp, "da-dev", "write -P 0x11 5M 64k")          # a little changes after the point
    guest_write(vm.qmp, "db", "write -P 0x22 12M 4k")

    _one_line_error(cutpoint("restore", "v", point, "--replace"), 2, "is running", "QMP socket", "quit")
    vm.quit()
    r = json.loads(cutpoint("restore", "v", point, "--replace", "--json", check=True).out)
    assert raw_bytes(a) == (ref / "da.raw").read_bytes()
    assert b.read_bytes() == (ref / "db.raw").read_bytes()
    total = 32 * 2**20 + 16 * 2**20
    assert r["bytes_compared"] == total
    cs = 4 << 20 if vault_format == 3 else 64 << 10
    assert r["bytes_written"] == 2 * cs, r                          # one chunk per disk, not the whole disks
    again = json.loads(cutpoint("restore", "v", point, "--replace", "--json", check=True).out)
    assert again["bytes_written"] == 0

    subprocess.run(["qemu-img", "resize", "-q", str(a), "48M"], check=True)     # sizes changed since the point
    subprocess.run(["truncate", "-s", "8M", str(b)], check=True)
    r = json.loads(cutpoint("restore", "v", point, "--replace", "--json", check=True).out)
    sizes = {d["disk"]: d["resized_from"] for d in r["disks"]}
    assert sizes == {"da": 48 * 2**20, "db": 8 * 2**20}
    assert raw_bytes(a) == (ref / "da.raw").read_bytes()
    assert b.read_bytes() == (ref / "db.raw").read_bytes()

    vm2 = bare_qemu(args, name="again")                       # the replaced disks boot as the VM's disks again
    vm2.quit()


def test_replace_refuses_a_vm_whose_disk_is_in_use(bare_qemu, tmp_path: Path) -> None:
    a = make_image(tmp_path / "a.qcow2", "16M", writes=["write -P 0xab 0 1M"])
    vm = bare_qemu(blockdev_args(a, "da"))
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    point = json.loads(cutpoint("backup", "v", "--json", check=True).out)["point"]
    before = raw_bytes(a)
    _one_line_error(cutpoint("restore", "v", point, "--replace"), 2, "is running", "QMP socket")
    assert "lock" in (running_reason(None, None, None, [a]) or "")   # without socket or pid, the image lock tells
    vm.kill()
    assert running_reason(str(vm.qmp), None, None, [a]) is None
    assert raw_bytes(a) == before
    _one_line_error(cutpoint("restore", "v", "nosuch", "--replace"), 3, "no restore point")


@pytest.mark.both_formats
def test_replace_onto_a_block_device(bare_qemu, tmp_path: Path, vault_format: int) -> None:
    """A raw disk on a host block device (an LVM volume; here a loop device): its size is read by seeking, the
    point is written back onto it, and a size mismatch is a clear error, never a truncate of a device."""
    backing = tmp_path / "lv.img"
    backing.write_bytes(b"\x4c" * (4 << 20) + b"\0" * (12 << 20))
    r = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"no loop device here: {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        vm = bare_qemu(["-blockdev", f"driver=host_device,filename={dev},node-name=lv-file,cache.direct=on",
                        "-blockdev", "driver=raw,file=lv-file,node-name=lv",
                        "-device", "virtio-blk-pci,drive=lv,id=lv-dev"])
        cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
        point = json.loads(cutpoint("backup", "v", "--json", check=True).out)["point"]
        vm.quit()
        with open(dev, "r+b") as f:                        # damage after the point
            f.seek(9 << 20)
            f.write(b"\x99" * (1 << 20))
        res = json.loads(cutpoint("restore", "v", point, "--replace", "--json", check=True).out)
        damaged = 4 << 20 if vault_format == 3 else 1 << 20     # the chunks the 1 MiB of damage falls in
        assert res["bytes_compared"] == 16 << 20 and res["bytes_written"] == damaged, res
        with open(dev, "rb") as f:
            assert f.read() == b"\x4c" * (4 << 20) + b"\0" * (12 << 20)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
    bigger = tmp_path / "bigger.img"                        # a device larger than the point's disk
    bigger.write_bytes(b"\0" * (24 << 20))
    r = subprocess.run(["losetup", "-f", "--show", str(bigger)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    dev2 = r.stdout.strip()
    try:
        with pytest.raises(UsageError, match="block device of 25165824 bytes"):
            _prepare(Path(dev2), "raw", 16 << 20)
    finally:
        subprocess.run(["losetup", "-d", dev2], check=False)
