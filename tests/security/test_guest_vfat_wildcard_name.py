"""A vfat long name made of mtools wildcards (``*****-long-name.txt``) must fetch that file, not every file it
matches glued together; a guest can write such a name (only the short name is checksummed)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.helpers import blockdev_args, cutpoint


def test_guest_vfat_wildcard_long_name(bare_qemu, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "kq7zw-long-name.txt").write_text("the file itself\n")
    (src / "dir" / "other-long-name.txt").write_text("another file\n")
    img = tmp_path / "fat.img"
    subprocess.run(["truncate", "-s", "16M", str(img)], check=True)
    subprocess.run(["mkfs.vfat", str(img)], check=True, capture_output=True)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1", LC_ALL="C.UTF-8")
    subprocess.run(["mcopy", "-s", "-i", str(img), str(src / "dir"), "::/"], check=True, env=env)
    data = bytearray(img.read_bytes())
    lfn = "kq7zw".encode("utf-16-le")
    assert data.count(lfn) == 1
    at = data.index(lfn)
    data[at:at + len(lfn)] = "*****".encode("utf-16-le")
    img.write_bytes(bytes(data))
    qemu = bare_qemu(blockdev_args(img, "vda", "raw"))
    cutpoint("vm", "add", "fat", "--qmp", str(qemu.qmp), check=True)
    pid = json.loads(cutpoint("backup", "fat", "--json", check=True).out)["point"]
    listed = json.loads(cutpoint("files", "ls", "fat", pid, "/dir", "--json", check=True).out)
    assert sorted(e["name"] for e in listed["entries"]) == ["*****-long-name.txt", "other-long-name.txt"]
    out = tmp_path / "out"
    r = cutpoint("files", "get", "fat", pid, "/dir", "--to", str(out))
    assert r.code == 0, r.err
    assert (out / "dir" / "*****-long-name.txt").read_text() == "the file itself\n"
    assert (out / "dir" / "other-long-name.txt").read_text() == "another file\n"
