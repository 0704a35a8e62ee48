"""--replace meeting a damaged chunk: it refuses before the first byte is written (every disk byte-identical to
before), and once the chunk is repaired a rerun completes the replace."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import cutpoint, guest_write, raw_bytes
from tests.vault.util import chunk_of, chunk_path, flip_chunk, pack_of, snapshot, two_disk_vm

MiB = 1 << 20


@pytest.mark.both_formats
def test_damaged_chunk_stops_replace_before_any_write(bare_qemu, tmp_path: Path, vault_format: int) -> None:
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    point = json.loads(cutpoint("backup", "v", "--json", check=True).out)["point"]
    at_point = snapshot(images)
    guest_write(vm.qmp, "da-dev", "write -P 0x77 0 64k")        # both disks change after the point
    guest_write(vm.qmp, "db", "write -P 0x88 0 64k")
    vm.quit()
    before = snapshot(images)
    assert before != at_point

    cid = chunk_of(point, "db", 0)                             # the last disk's chunk: da is replaced first
    path = chunk_path(cid) if vault_format == 3 else pack_of(cid)[0]    # the file holding it: chunk or pack
    good = path.read_bytes()
    os.chmod(path, 0o644)
    flip_chunk(cid)

    r = cutpoint("restore", "v", point, "--replace")
    assert r.code == 6, (r.code, r.out, r.err)
    assert len(r.err.strip().splitlines()) == 1 and "nothing was written" in r.err, r.err
    assert snapshot(images) == before                          # not one byte of either disk changed

    path.write_bytes(good)                                     # repaired (e.g. from a copy of the vault)
    res = json.loads(cutpoint("restore", "v", point, "--replace", "--json", check=True).out)
    assert snapshot(images) == at_point
    assert res["bytes_written"] == 2 * (4 * MiB if vault_format == 3 else 64 << 10), res   # a chunk per disk
    assert raw_bytes(images["da"]) == at_point["da"]


def test_replace_refuses_a_block_device_held_exclusively(bare_qemu, tmp_path: Path) -> None:
    """O_EXCL: a block device another process holds exclusively (mounted, in a RAID, opened by QEMU) is not written."""
    import subprocess

    import pytest

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
        with open(dev, "r+b") as f:
            f.seek(9 << 20)
            f.write(b"\x99" * (1 << 20))
        holder = os.open(dev, os.O_RDONLY | os.O_EXCL)         # someone else has it open exclusively
        try:
            r = cutpoint("restore", "v", point, "--replace")
            assert r.code != 0 and dev in r.err and "in use" in r.err, (r.code, r.err)
        finally:
            os.close(holder)
        with open(dev, "rb") as f:
            f.seek(9 << 20)
            assert f.read(1 << 20) == b"\x99" * (1 << 20)          # untouched
        cutpoint("restore", "v", point, "--replace", check=True)
        with open(dev, "rb") as f:
            assert f.read() == b"\x4c" * (4 << 20) + b"\0" * (12 << 20)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
