"""A guest file too big for the target or for ``--max-bytes``: refused before copying, or stopped when the guest
under-declares its allocation; nothing is left behind either way."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import cutpoint
from tests.security.guestfs import Ext2, backup

MiB = 1 << 20


@pytest.fixture
def point(bare_qemu, tmp_path: Path) -> str:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * MiB))
    fs = Ext2(tmp_path / "g.img")
    fs.run("mkdir dir", f"write {big} dir/big.bin", f"write {big} liar.bin", "sif liar.bin blocks 0")
    return backup(bare_qemu, fs.finish())


def _refused(r, *needles: str) -> None:
    assert r.code == 2, (r.code, r.err)
    assert len(r.err.splitlines()) == 1 and r.err.startswith("cutpoint: error: "), r.err
    for n in needles:
        assert n in r.err, r.err


def test_guest_file_over_max_bytes_is_refused(point: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _refused(cutpoint("files", "get", "guest", point, "/dir", "--to", str(out), "--max-bytes", "1M"), "--max-bytes")
    assert not out.exists()                                     # not even the --to it would have made
    cutpoint("files", "get", "guest", point, "/dir", "--to", str(out), "--max-bytes", "4M", check=True)
    assert (out / "dir" / "big.bin").stat().st_size == 3 * MiB


def test_guest_lying_about_allocation_is_stopped(point: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _refused(cutpoint("files", "get", "guest", point, "/liar.bin", "--to", str(out), "--max-bytes", "1M"),
             "more than", "nothing was kept")
    assert not out.exists()                                     # not even the --to it would have made


def test_guest_file_larger_than_free_space_is_refused(point: str, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.decode().strip()}")
    try:
        _refused(cutpoint("files", "get", "guest", point, "/dir", "--to", str(small)), "free")
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)
