"""A guest file declaring 2 GiB with 4 KiB of data must come back sparse, not as 2 GiB of allocated zeros."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.helpers import cutpoint
from tests.security.guestfs import Ext2, backup

GiB = 1 << 30


def test_guest_sparse_file_stays_sparse(bare_qemu, tmp_path: Path) -> None:
    src = tmp_path / "sparse.bin"
    with open(src, "wb") as f:
        f.write(b"head" * 1024)
        f.seek(2 * GiB - 4096)
        f.write(b"tail" * 1024)
    fs = Ext2(tmp_path / "g.img")
    fs.run(f"write {src} sparse.bin")
    pid = backup(bare_qemu, fs.finish())
    out = tmp_path / "out"
    res = json.loads(cutpoint("files", "get", "guest", pid, "/sparse.bin", "--to", str(out), "--json",
                              check=True).out)
    st = os.lstat(out / "sparse.bin")
    assert st.st_size == 2 * GiB and res["bytes"] == 2 * GiB
    assert st.st_blocks * 512 < 4 << 20, st.st_blocks                  # a few blocks, not 2 GiB
    assert res["bytes_written"] <= 1 << 20
    with open(out / "sparse.bin", "rb") as f:
        assert f.read(4096) == b"head" * 1024
        f.seek(GiB)
        assert f.read(4096) == bytes(4096)
        f.seek(2 * GiB - 4096)
        assert f.read() == b"tail" * 1024
