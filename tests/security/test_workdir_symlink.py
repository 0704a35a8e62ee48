"""A symlink planted in the scratch space: a backup's sweep deleted the subdirectories of whatever the link at
``WORK/<vm>`` pointed to. Now a link at the work root, at a VM's directory or at a point directory is refused with
the path and the fix, and the link's target keeps its contents."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cutpoint.paths import work_home
from tests.helpers import blockdev_args, cutpoint, make_image


def _victim(tmp_path: Path) -> Path:
    target = tmp_path / "precious"
    for sub in ("etc", "home/user"):
        (target / sub).mkdir(parents=True)
        (target / sub / "data").write_bytes(b"keep me")
    return target


def _vm(bare_qemu, tmp_path: Path) -> None:
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "8M", writes=["write -P 0x11 0 1M"]), "da"))
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)


def _survived(target: Path) -> None:
    assert (target / "etc" / "data").read_bytes() == b"keep me"
    assert (target / "home" / "user" / "data").read_bytes() == b"keep me"


@pytest.mark.parametrize("where", ["vm", "root", "point"])
def test_backup_refuses_a_symlinked_work_directory(bare_qemu, tmp_path: Path, where: str) -> None:
    _vm(bare_qemu, tmp_path)
    target = _victim(tmp_path)
    root = work_home()
    if where == "root":
        root.parent.mkdir(parents=True, exist_ok=True)
        root.symlink_to(target)
        link = root
    else:
        (root / "v").mkdir(parents=True) if where == "point" else root.mkdir(parents=True)
        link = root / "v" / "20990101T000000Z-dead" if where == "point" else root / "v"
        link.symlink_to(target)
    for cmd in (["backup", "v"], ["vm", "cleanup", "v"]):
        r = cutpoint(*cmd)
        assert r.code == 5, (cmd, r.code, r.err)
        assert f"unsafe work directory {link}" in r.err and "symbolic link" in r.err, r.err
        assert "CUTPOINT_WORK" in r.err and r.err.count("\n") == 1, r.err
        _survived(target)
    assert os.path.islink(link)                                  # refused, not "fixed" by deleting through it
    assert cutpoint("points", "v", "--json", check=True).out.strip() == "[]"


def test_backup_works_again_once_the_link_is_gone(bare_qemu, tmp_path: Path) -> None:
    _vm(bare_qemu, tmp_path)
    target = _victim(tmp_path)
    work_home().mkdir(parents=True)
    (work_home() / "v").symlink_to(target)
    assert cutpoint("backup", "v").code == 5
    (work_home() / "v").unlink()
    cutpoint("backup", "v", check=True)
    _survived(target)
    assert not (work_home() / "v").exists()                      # the point's scratch went after the backup
    assert os.stat(work_home()).st_mode & 0o066 == 0              # made 0755 above: tightened, it is ours
