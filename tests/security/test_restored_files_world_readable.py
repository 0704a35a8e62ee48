"""Restored images, a new VM's directory and its start.sh/vm.json (the VM's command line, which can hold secrets)
are private to the restoring user whatever the umask: files 0600 (start.sh 0700), directories 0700."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.helpers import cutpoint
from tests.security.util import backed_up_vm


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(0o000)          # the CLI subprocess inherits it: the most permissive caller
    yield
    os.umask(old)


def test_restored_files_are_private(bare_qemu, tmp_path: Path, vms_home: Path, open_umask) -> None:
    _, point = backed_up_vm(bare_qemu, tmp_path)
    for fmt in ("raw", "qcow2"):
        to = tmp_path / f"to-{fmt}" / "sub"
        cutpoint("restore", "v", point, "--to", str(to), "--format", fmt, check=True)
        assert _mode(to) == 0o700, oct(_mode(to))
        assert _mode(to.parent) == 0o700, oct(_mode(to.parent))
        img = to / f"da.{fmt}"
        assert _mode(img) == 0o600, (fmt, oct(_mode(img)))
        assert sorted(p.name for p in to.iterdir()) == [img.name]

    r = cutpoint("restore", "v", point, "--new-vm", "n1", "--json")
    assert r.code == 0, r.err
    d = Path(json.loads(r.out)["dir"])
    assert _mode(d) == 0o700, oct(_mode(d))
    assert _mode(d / "vm.json") == 0o600, oct(_mode(d / "vm.json"))
    assert _mode(d / "start.sh") == 0o700, oct(_mode(d / "start.sh"))
    assert _mode(d / "da.qcow2") == 0o600, oct(_mode(d / "da.qcow2"))
