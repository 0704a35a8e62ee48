"""A guest symlink ``vlink -> /host/file`` beside a regular file also named ``vlink`` must not write the host file;
nor may a symlink already in the target."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.helpers import cutpoint
from tests.security.guestfs import Ext2, backup


def test_guest_symlink_then_same_named_file_does_not_write_through(bare_qemu, tmp_path: Path) -> None:
    host = tmp_path / "host-file"
    host.write_text("host data, must stay\n")
    payload = tmp_path / "payload"
    payload.write_text("guest payload\n")
    fs = Ext2(tmp_path / "g.img")
    fs.run("mkdir dir", "cd dir", f"symlink vlink-a-name {host}", f"write {payload} plain.txt",
           f"write {payload} " + fs.placeholder(b"vlink-a-name").decode())
    pid = backup(bare_qemu, fs.finish())
    listed = json.loads(cutpoint("files", "ls", "guest", pid, "/dir", "--json", check=True).out)
    assert sorted((e["name"], e["type"]) for e in listed["entries"]) == \
        [("plain.txt", "file"), ("vlink-a-name", "file"), ("vlink-a-name", "link")]

    out = tmp_path / "out"
    r = cutpoint("files", "get", "guest", pid, "/dir", "--to", str(out))
    assert host.read_text() == "host data, must stay\n"
    assert r.code == 0, r.err
    assert "skipped /dir/vlink-a-name" in r.err and "same name" in r.err
    assert os.readlink(out / "dir" / "vlink-a-name") == str(host)     # the first came back as the link it is
    assert (out / "dir" / "plain.txt").read_text() == "guest payload\n"


def test_symlink_already_in_target_is_not_followed(bare_qemu, tmp_path: Path) -> None:
    host = tmp_path / "host-file"
    host.write_text("host data, must stay\n")
    payload = tmp_path / "payload"
    payload.write_text("guest payload\n")
    fs = Ext2(tmp_path / "g.img")
    fs.run(f"write {payload} name.txt")
    pid = backup(bare_qemu, fs.finish())
    out = tmp_path / "out"
    out.mkdir()
    (out / "name.txt").symlink_to(host)
    r = cutpoint("files", "get", "guest", pid, "/name.txt", "--to", str(out))
    assert r.code == 2 and "already exists" in r.err, r.err
    assert host.read_text() == "host data, must stay\n"
    assert sorted(os.listdir(out)) == ["name.txt"] and (out / "name.txt").is_symlink()
