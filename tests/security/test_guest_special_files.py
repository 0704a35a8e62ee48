"""Guest device nodes and FIFOs are skipped with a warning; set-uid and set-gid bits never reach the host."""

from __future__ import annotations

import os
import stat
from pathlib import Path

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
    assert r.code == 2 and "character device" in r.err and len(r.err.splitlines()) == 1, r.err
    assert not (tmp_path / "one" / "mem").exists()
