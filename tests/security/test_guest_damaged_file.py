"""A guest file whose blocks point outside its filesystem cannot be read: it is skipped with a warning and the rest
of the directory still comes back; asked for alone, one clear error and nothing written."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import cutpoint
from tests.security.guestfs import Ext2, backup


def test_guest_damaged_file_is_skipped(bare_qemu, tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    payload.write_text("good\n")
    fs = Ext2(tmp_path / "g.img", "8M")
    fs.run("mkdir dir", f"write {payload} dir/good.txt", f"write {payload} dir/bad.bin",
           "sif dir/bad.bin size 40960", "sif dir/bad.bin block[0] 4000000000")
    pid = backup(bare_qemu, fs.finish())
    out = tmp_path / "out"
    r = cutpoint("files", "get", "guest", pid, "/dir", "--to", str(out))
    assert r.code == 0, r.err
    assert "skipped /dir/bad.bin: cannot read it" in r.err, r.err
    assert os.listdir(out / "dir") == ["good.txt"]
    r = cutpoint("files", "get", "guest", pid, "/dir/bad.bin", "--to", str(tmp_path / "one"))
    assert r.code != 0 and len(r.err.splitlines()) == 1 and "bad.bin" in r.err, r.err
    assert not (tmp_path / "one").exists()
