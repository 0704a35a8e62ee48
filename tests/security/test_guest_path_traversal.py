"""A guest directory entry named ``../../…/x`` (or holding NUL) must not create anything outside ``--to``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.helpers import cutpoint
from tests.security.guestfs import Ext2, backup


def test_guest_path_traversal_name_creates_nothing_outside_target(bare_qemu, tmp_path: Path) -> None:
    outside = tmp_path / "escaped"
    ok = tmp_path / "ok.txt"
    ok.write_text("kept\n")
    fs = Ext2(tmp_path / "g.img")
    evil = b"../" * 16 + str(outside).lstrip("/").encode()
    nul = b"nul\0name.txt"
    fs.run("mkdir dir", f"write {ok} dir/ok.txt", "cd dir",
           b"write " + str(ok).encode() + b" " + fs.placeholder(evil),
           b"write " + str(ok).encode() + b" " + fs.placeholder(nul),
           b"write " + str(ok).encode() + b" " + fs.placeholder(b".."),      # a second '..', a file
           b"write " + str(ok).encode() + b" " + fs.placeholder(b"."))
    pid = backup(bare_qemu, fs.finish())

    listed = json.loads(cutpoint("files", "ls", "guest", pid, "/dir", "--json", check=True).out)
    names = {e["name"] for e in listed["entries"]}
    assert "..\\x2f" * 2 in next(n for n in names if n.startswith("..")), names   # shown, '/' escaped
    assert "nul\\x00name.txt" in names

    out = tmp_path / "out"
    r = cutpoint("files", "get", "guest", pid, "/dir", "--to", str(out), "--json")
    assert r.code == 0, r.err
    assert not outside.exists() and not outside.is_symlink()
    res = json.loads(r.out)
    assert sorted(os.listdir(out / "dir")) == ["ok.txt"]
    assert (out / "dir" / "ok.txt").read_text() == "kept\n"
    assert len(res["skipped"]) == 4 and all("skipped" in w for w in res["warnings"])
    assert r.err.count("cutpoint: warning: skipped") == 4 and "holds '/'" in r.err and "NUL" in r.err
    assert "skipped /dir/..: its name is '..'" in r.err and "skipped /dir/.: its name is '.'" in r.err
    assert sorted(os.listdir(out)) == ["dir"]                   # no staging directory left

    # asked for by name, the hostile entry is refused with one line and nothing is written
    bad = next(n for n in names if n.startswith(".."))
    r = cutpoint("files", "get", "guest", pid, f"/dir/{bad}", "--to", str(tmp_path / "out2"))
    assert r.code == 2 and r.err.startswith("cutpoint: error: cannot restore") and len(r.err.splitlines()) == 1
    assert not outside.exists() and not (tmp_path / "out2").exists()
