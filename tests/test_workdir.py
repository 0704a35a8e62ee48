"""workdir.py on real directories: a sweep stays inside its VM's directory, restore scratch is apart from every VM's,
and libvirt's QEMU (another user) can pass through the state directory when the default work root lies in it, while
the API token directory stays closed."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from cutpoint import workdir
from cutpoint.api import auth
from cutpoint.errors import UnsafePathError, UsageError

NOBODY = pwd.getpwnam("nobody")


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def test_a_sweep_removes_only_its_own_vms_points(isolated: Path) -> None:
    root = Path(os.environ["CUTPOINT_WORK"])
    mine = workdir.make_point_dir(workdir.point_path("a", "20990101T000000Z-0001"))
    (mine / "fleece-0.qcow2").write_bytes(b"x")
    others = [workdir.make_point_dir(workdir.point_path(vm, "20990101T000000Z-0002")) for vm in ("ab", "a.b", "A")]
    restore = workdir.private_dir("instant")
    (restore / "sock").write_bytes(b"y")
    assert workdir.sweep("a") == [str(mine)]
    assert not mine.exists() and all(p.is_dir() for p in others) and (restore / "sock").exists()
    assert _mode(root) == 0o700 and _mode(root / "ab") == 0o700 and _mode(restore) == 0o700
    with pytest.raises(UsageError):
        workdir.sweep("..")


def test_a_symlinked_restore_scratch_directory_is_refused(isolated: Path, tmp_path: Path) -> None:
    root = Path(os.environ["CUTPOINT_WORK"])
    workdir.private_dir("views")
    (tmp_path / "elsewhere").mkdir()
    (root / ".replace").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match=r"unsafe work directory .*\.replace: it is a symbolic link"):
        workdir.private_dir("replace")


def test_qemu_of_another_user_passes_the_state_dir_that_holds_the_work_root(isolated: Path, monkeypatch) -> None:
    state = isolated / "state"
    state.mkdir(mode=0o700)
    monkeypatch.setenv("CUTPOINT_STATE", str(state))
    monkeypatch.setenv("CUTPOINT_WORK", str(state / "work"))       # the default layout: /var/lib/cutpoint/work
    os.chmod(isolated, 0o755)                                       # as tests/libvirt/conftest.py does
    auth.token_dir()
    assert _mode(state) == 0o700
    point = workdir.make_point_dir(workdir.point_path("v", "20990101T000000Z-0001"))
    qdir = workdir.share_with(point, NOBODY.pw_uid, NOBODY.pw_gid)
    assert qdir.stat().st_uid == NOBODY.pw_uid and _mode(qdir) == 0o700
    assert _mode(state) == 0o711                                    # search only: nobody can list or write it
    assert all(_mode(p) == 0o711 for p in (state / "work", state / "work" / "v", point))
    tokens = auth.token_dir()
    assert _mode(state) == 0o711 and _mode(tokens) == 0o700           # the token dir keeps closed, the passage stays
    os.chmod(state, 0o755)
    auth.token_dir()
    assert _mode(state) == 0o711                                    # listing closed again, passage kept
