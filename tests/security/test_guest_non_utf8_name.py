"""Guest names that are not UTF-8 or hold terminal control sequences: listed escaped, fetched by the escaped form,
never printed raw."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

from tests.helpers import blockdev_args, cutpoint
from tests.security.guestfs import Ext2, backup

LATIN1 = b"caf\xe9-\xff.txt"                      # not UTF-8
ESCAPE = b"\x1b]0;owned\x07\x1b[2J.txt"            # sets the terminal title and clears the screen if printed raw


def test_guest_non_utf8_and_control_names(bare_qemu, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("latin-1 named\n")
    b.write_text("escape named\n")
    fs = Ext2(tmp_path / "g.img")
    fs.run("mkdir dir", "cd dir", b"write " + str(a).encode() + b" " + LATIN1,
           b"write " + str(b).encode() + b" " + fs.placeholder(ESCAPE))
    pid = backup(bare_qemu, fs.finish())

    r = cutpoint("files", "ls", "guest", pid, "/dir")
    assert r.code == 0, r.err
    assert "caf\\xe9-\\xff.txt" in r.out and "\\x1b]0;owned\\x07\\x1b[2J.txt" in r.out
    assert "\x1b" not in r.out and "\x07" not in r.out
    listed = json.loads(cutpoint("files", "ls", "guest", pid, "/dir", "--json", check=True).out)
    raw = {base64.b64decode(e["name_b64"]): e["name"] for e in listed["entries"]}
    assert raw[LATIN1] == "caf\\xe9-\\xff.txt" and raw[ESCAPE] == "\\x1b]0;owned\\x07\\x1b[2J.txt"

    out = tmp_path / "out"
    r = cutpoint("files", "get", "guest", pid, "/dir/caf\\xe9-\\xff.txt", "--to", str(out))
    assert r.code == 0, r.err
    assert "\\xe9" in r.out
    assert os.listdir(os.fsencode(out)) == [LATIN1]
    assert (os.fsencode(out) + b"/" + LATIN1) and open(os.fsencode(out) + b"/" + LATIN1).read() == "latin-1 named\n"
    r = cutpoint("files", "get", "guest", pid, "/dir", "--to", str(out / "all"))
    assert r.code == 0 and "\x1b" not in r.out + r.err, r.err
    assert sorted(os.listdir(os.fsencode(out / "all" / "dir"))) == sorted([LATIN1, ESCAPE])
    r = cutpoint("files", "get", "guest", pid, "/dir/no\x1b[2Jsuch", "--to", str(out))
    assert r.code == 3 and "\x1b" not in r.err and "no\\x1b[2Jsuch" in r.err, r.err


def test_vfat_long_name_outside_ascii(bare_qemu, tmp_path: Path) -> None:
    """mtools under LC_ALL=C showed 'café.txt' as 'caf_.txt', a name that could then not be fetched."""
    src = tmp_path / "café.txt"
    src.write_text("accented\n")
    img = tmp_path / "fat.img"
    subprocess.run(["truncate", "-s", "16M", str(img)], check=True)
    subprocess.run(["mkfs.vfat", str(img)], check=True, capture_output=True)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1", LC_ALL="C.UTF-8")
    subprocess.run(["mcopy", "-i", str(img), str(src), "::/"], check=True, env=env)
    qemu = bare_qemu(blockdev_args(img, "vda", "raw"))
    cutpoint("vm", "add", "fat", "--qmp", str(qemu.qmp), check=True)
    pid = json.loads(cutpoint("backup", "fat", "--json", check=True).out)["point"]
    listed = json.loads(cutpoint("files", "ls", "fat", pid, "--json", check=True).out)
    assert [e["name"] for e in listed["entries"]] == ["café.txt"]
    out = tmp_path / "out"
    cutpoint("files", "get", "fat", pid, "/café.txt", "--to", str(out), check=True)
    assert (out / "café.txt").read_text() == "accented\n"
