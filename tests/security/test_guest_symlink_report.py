"""A guest symlink to ``/etc/shadow``: listed and reported from the guest's inode, restored as a symlink, never
read through."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.helpers import cutpoint
from tests.security.guestfs import Ext2, backup


def test_guest_symlink_to_host_file_is_not_reported_or_followed(bare_qemu, tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    payload.write_text("12345\n")
    long_target = "/" + "x" * 200 + "/etc/shadow"                  # a slow symlink: its target in a data block
    fs = Ext2(tmp_path / "g.img")
    fs.run("mkdir dir", "cd dir", "symlink shadow /etc/shadow", f"symlink slow {long_target}",
           f"write {payload} real.txt")
    pid = backup(bare_qemu, fs.finish())
    assert os.stat("/etc/shadow").st_size != len("/etc/shadow")

    listed = json.loads(cutpoint("files", "ls", "guest", pid, "/dir", "--json", check=True).out)
    sizes = {e["name"]: (e["type"], e["size"]) for e in listed["entries"]}
    assert sizes["shadow"] == ("link", len("/etc/shadow")) and sizes["slow"] == ("link", len(long_target))

    out = tmp_path / "out"
    res = json.loads(cutpoint("files", "get", "guest", pid, "/dir", "--to", str(out), "--json", check=True).out)
    assert [Path(f["path"]).name for f in res["files"]] == ["real.txt"]           # only the regular file
    assert res["bytes"] == 6
    assert {Path(x["path"]).name: x["target"] for x in res["links"]} == {"shadow": "/etc/shadow",
                                                                         "slow": long_target}
    assert os.readlink(out / "dir" / "shadow") == "/etc/shadow"
    assert os.readlink(out / "dir" / "slow") == long_target

    one = tmp_path / "one"                                          # the link itself, asked for by name
    res = json.loads(cutpoint("files", "get", "guest", pid, "/dir/shadow", "--to", str(one), "--json",
                              check=True).out)
    assert res["files"] == [] and res["bytes"] == 0
    assert os.readlink(one / "shadow") == "/etc/shadow"
