"""Guest device nodes and FIFOs are skipped with a warning; set-uid and set-gid bits never reach the host."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.helpers import cutpoint
from tests.security.guestfs import Ext2, backup


def test_guest_devices_fifos_and_setuid(bare_qemu, tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    payload.write_text("#!/bin/sh\nid\n")
    fs = Ext2(tmp_path / "g.img")
    fs.run("mkdir dir", "cd dir", "mknod fifo p", "mknod mem c 1 1", "mknod disk b 8 0",
           f"write {payload} suid", "sif suid mode 0104755", f"write {payload} sgid", "sif sgid mode 0102755",
           "mkdir gdir", "sif gdir mode 042775")
    pid = backup(bare_qemu, fs.finish())
    out = tmp_path / "out"
    r = cutpoint("files", "get", "guest", pid, "/dir", "--to", str(out))
    assert r.code == 0, r.err
    assert sorted(os.listdir(out / "dir")) == ["gdir", "sgid", "suid"]
    for name, what in (("fifo", "FIFO"), ("mem", "character device"), ("disk", "block device")):
        assert f"skipped /dir/{name}: it is a {what}" in r.err, r.err
    assert stat.S_IMODE(os.lstat(out / "dir" / "suid").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(out / "dir" / "sgid").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(out / "dir" / "gdir").st_mode) == 0o775
    assert (out / "dir" / "suid").read_text() == "#!/bin/sh\nid\n"
    r = cutpoint("files", "get", "guest", pid, "/dir/mem", "--to", str(tmp_path / "one"))
    assert r.code == 9 and "character device" in r.err and len(r.err.splitlines()) == 1, r.err
    assert not (tmp_path / "one" / "mem").exists()


def test_guest_devices_and_setuid_are_inert_when_mounted(bare_qemu, tmp_path: Path) -> None:
    """``cutpoint mount``: the guest's /dev/mem twin cannot be opened and its set-uid bit gives nothing."""
    payload = tmp_path / "payload"
    payload.write_text("#!/bin/sh\nid\n")
    fs = Ext2(tmp_path / "g.img")
    fs.run("mknod mem c 1 1", f"write {payload} suid", "sif suid mode 0104755")
    pid = backup(bare_qemu, fs.finish())
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = cutpoint("mount", "guest", pid, str(mnt))
    if r.code == 9:
        pytest.skip(f"host cannot mount through FUSE: {r.err}")
    assert r.code == 0, r.err
    try:
        opts = subprocess.run(["findmnt", "-no", "OPTIONS", str(mnt)], capture_output=True, text=True).stdout
        assert {"nosuid", "nodev"} <= set(opts.strip().split(",")), opts
        assert stat.S_ISCHR(os.lstat(mnt / "mem").st_mode)
        with pytest.raises(OSError):
            os.open(mnt / "mem", os.O_RDONLY)
    finally:
        cutpoint("umount", str(mnt), check=True)
