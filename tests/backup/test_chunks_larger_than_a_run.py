"""A v4 vault whose chunks are larger than a read run (4 MiB): a run is then one chunk, read whole into the worker's
buffer, which grows to fit it; full and incremental points restore byte-identical."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cutpoint.vault.vault import Vault
from tests.helpers import blockdev_args, cutpoint, drive_args, guest_write, make_image, raw_bytes

MiB = 1 << 20


def test_chunks_of_16_mib_back_up_and_restore(bare_qemu, tmp_path: Path) -> None:
    root = tmp_path / "big-chunks"
    Vault.create(root, chunk_size=16 * MiB)
    v = ("--vault", str(root))
    sys_img = make_image(tmp_path / "sys.qcow2", "48M", writes=["write -P 0xab 1M 20M", "write -P 0x11 40M 3M"])
    data = tmp_path / "data.raw"
    with open(data, "wb") as f:
        f.write(os.urandom(24 * MiB))             # incompressible: the chunk's bytes go to the pack as read
        f.truncate(40 * MiB)
    vm = bare_qemu(blockdev_args(sys_img, "sys") + drive_args(data, "data", "raw"))
    cutpoint("vm", "add", "web", "--qmp", str(vm.qmp), *v, check=True)
    full = json.loads(cutpoint("backup", "web", "--json", *v, check=True).out)
    at_full = {d: raw_bytes(p) for d, p in (("sys", sys_img), ("data", data))}
    guest_write(vm.qmp, "data", "write -P 0x5a 17M 64k")
    inc = json.loads(cutpoint("backup", "web", "--json", *v, check=True).out)
    assert inc["mode"] == "incremental", inc
    at_inc = {d: raw_bytes(p) for d, p in (("sys", sys_img), ("data", data))}
    for point, want in ((full["point"], at_full), (inc["point"], at_inc)):
        out = tmp_path / f"out-{point}"
        r = json.loads(cutpoint("restore", "web", point, "--to", str(out), "--json", *v, check=True).out)
        assert {f["disk"]: raw_bytes(Path(f["path"])) for f in r["files"]} == want, point
