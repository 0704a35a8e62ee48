"""A work directory another user owns, or one anybody may write to, could already hold what that user planted:
refused with the path and the fix (exit 5) before anything is created or deleted in it."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from cutpoint.paths import work_home
from tests.helpers import blockdev_args, cutpoint, make_image

NOBODY = pwd.getpwnam("nobody").pw_uid


def _vm(bare_qemu, tmp_path: Path) -> None:
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "8M", writes=["write -P 0x11 0 1M"]), "da"))
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)


def _planted(d: Path) -> Path:
    p = d / "20990101T000000Z-dead"
    p.mkdir(parents=True)
    (p / "planted").write_bytes(b"x")
    return p / "planted"


@pytest.mark.parametrize("level", ["root", "vm"])
@pytest.mark.parametrize("how", ["chown nobody", "chmod 0777", "chmod 0770"])
def test_foreign_or_writable_work_directory_is_refused(bare_qemu, tmp_path: Path, level: str, how: str) -> None:
    _vm(bare_qemu, tmp_path)
    d = work_home() / "v"
    planted = _planted(d)
    bad = work_home() if level == "root" else d
    if how == "chown nobody":
        os.chown(bad, NOBODY, -1)
        why = f"owned by uid {NOBODY}"
    else:
        os.chmod(bad, int(how.split()[1], 8))
        why = "writable by group or others"
    r = cutpoint("backup", "v")
    assert r.code == 5, (r.code, r.err)
    assert f"unsafe work directory {bad}: " in r.err and why in r.err and "CUTPOINT_WORK" in r.err, r.err
    assert r.err.count("\n") == 1
    assert planted.read_bytes() == b"x"                          # nothing deleted in it
    assert cutpoint("points", "v", "--json", check=True).out.strip() == "[]"


def test_a_writable_ancestor_of_the_root_is_refused(bare_qemu, tmp_path: Path, monkeypatch) -> None:
    _vm(bare_qemu, tmp_path)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)                                    # not sticky: anyone could rename the root away
    monkeypatch.setenv("CUTPOINT_WORK", str(open_dir / "work"))
    r = cutpoint("backup", "v")
    assert r.code == 5 and f"its ancestor {open_dir} is writable by others" in r.err, r.err
    assert not (open_dir / "work").exists()


def test_a_fresh_work_root_is_private(bare_qemu, tmp_path: Path) -> None:
    _vm(bare_qemu, tmp_path)
    assert not work_home().exists()
    cutpoint("backup", "v", check=True)
    st = os.stat(work_home())
    assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o700
