"""The vault's filesystem fills up during a backup (a 40 MiB tmpfs, incompressible data): the backup fails with one
line and leaves no point and no temporary file, the vault stays readable and verifies, and once space is freed the
next backup succeeds and restores byte-identical."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cutpoint.vault.vault import Vault
from tests.helpers import blockdev_args, cutpoint, guest_write, make_image
from tests.vault.util import MiB, add_vm, assert_sound, backup, files, snapshot, vault_version


@pytest.fixture
def small_fs(tmp_path: Path, monkeypatch, request):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40M", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    monkeypatch.setenv("CUTPOINT_VAULT", str(mnt / "vault"))
    callspec = getattr(request.node, "callspec", None)
    Vault.create(mnt / "vault",                       # 'cutpoint vault init --no-encrypt': nothing creates it implicitly
                 version=callspec.params.get("vault_format", 4) if callspec else 4)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.both_formats
def test_disk_full(bare_qemu, tmp_path: Path, small_fs: Path) -> None:
    noise = tmp_path / "noise"
    noise.write_bytes(os.urandom(24 * MiB))
    a = make_image(tmp_path / "a.qcow2", "32M", writes=[f"write -s {noise} 0 4M"])
    vm = bare_qemu(blockdev_args(a, "da"))
    add_vm("v", vm.qmp)
    p1 = backup()["point"]
    at_p1 = snapshot({"da": a})

    guest_write(vm.qmp, "da-dev", f"write -s {noise} 4M 24M")         # 24 MiB that does not compress
    st = os.statvfs(small_fs)
    ballast = small_fs / "ballast"
    ballast.write_bytes(bytes(st.f_bavail * st.f_frsize - 12 * MiB))  # leave 12 MiB
    r = cutpoint("backup", "v")
    assert r.code == 5, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cutpoint: error: ") and "No space left" in lines[0], r.err
    assert not list((small_fs / "vault").rglob(".tmp-*"))    # no temporary file anywhere (chunks, packs, points)
    assert len(files("index")) == (1 if vault_version() >= 4 else 0)   # v4: only the first point's index object
    assert_sound({p1: at_p1}, tmp_path)                 # readable, verifiable, only the committed point

    ballast.unlink()
    p2 = backup()["point"]
    assert_sound({p1: at_p1, p2: snapshot({"da": a})}, tmp_path)
