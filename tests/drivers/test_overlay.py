"""The fleecing overlay cutpoint writes itself (``drivers/qmp/overlay.py``) is the image ``qemu-img create`` makes:
qemu-img checks it clean, reads its size, writes and reads through it, and its clusters are qemu-img's byte for
byte (outside the optional feature name table)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cutpoint.drivers.qmp.overlay import CLUSTER, HEADER_LENGTH, create_qcow2

SIZES = [0, 1000, 64 << 20, 1536 << 20, (1 << 30) + 512, 1 << 40, 16 << 40]


@pytest.mark.parametrize("size", SIZES)
def test_an_overlay_is_qemu_imgs_empty_qcow2(tmp_path: Path, size: int) -> None:
    ours, theirs = tmp_path / "ours.qcow2", tmp_path / "theirs.qcow2"
    create_qcow2(ours, size)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(theirs), str(size)], check=True)
    a, b = ours.read_bytes(), theirs.read_bytes()
    assert len(a) == len(b)
    assert a[:HEADER_LENGTH] == b[:HEADER_LENGTH] and a[CLUSTER:] == b[CLUSTER:]
    check = subprocess.run(["qemu-img", "check", str(ours)], capture_output=True, text=True)
    assert check.returncode == 0 and "No errors were found" in check.stdout, check.stdout + check.stderr
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(ours)], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == -(-size // 512) * 512
    assert os.stat(ours).st_mode & 0o777 == 0o600


def test_an_overlay_takes_writes_and_stays_consistent(tmp_path: Path) -> None:
    img = tmp_path / "o.qcow2"
    create_qcow2(img, 256 << 20)
    io = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1M", "-c", "write -P 0xa5 200M 64k",
                         "-c", "read -P 0x5a 0 1M", "-c", "read -P 0xa5 200M 64k", "-c", "read -P 0 100M 64k",
                         str(img)], capture_output=True, text=True)
    assert io.returncode == 0 and "Pattern verification failed" not in io.stdout, io.stdout + io.stderr
    check = subprocess.run(["qemu-img", "check", str(img)], capture_output=True, text=True)
    assert check.returncode == 0 and "No errors were found" in check.stdout, check.stdout


def test_an_overlay_never_replaces_or_follows_what_is_there(tmp_path: Path) -> None:
    existing = tmp_path / "o.qcow2"
    existing.write_bytes(b"someone's file")
    with pytest.raises(FileExistsError):
        create_qcow2(existing, 1 << 20)
    assert existing.read_bytes() == b"someone's file"
    target = tmp_path / "elsewhere"
    (tmp_path / "link.qcow2").symlink_to(target)
    with pytest.raises(FileExistsError):
        create_qcow2(tmp_path / "link.qcow2", 1 << 20)
    assert not target.exists()
