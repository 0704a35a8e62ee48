"""QEMU's error wording is not an interface: with every QMP error message reworded (another QEMU version, another
language of its messages) cleanup still finds nothing to complain about when objects are already gone, and an NBD
server of another tool is still named as the reason a cut cannot start. The error class (GenericError for nearly
all of it in QEMU 7.2) is kept; only the text changes.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cutpoint.cut.cleanup import workdir_for
from cutpoint.cut.plan import Cut, plan_cut
from cutpoint.drivers.qmp.cleanup import release_cut
from cutpoint.drivers.qmp.cut import take_cut
from cutpoint.drivers.qmp.disks import discover
from cutpoint.drivers.qmp.driver import QmpDriver
from cutpoint.drivers.qmp.qmp import QmpSession
from cutpoint.errors import HypervisorError, QmpCommandError
from cutpoint.paths import work_home
from tests.helpers import assert_clean, blockdev_args, make_image, qemu_state

REWORDED = "das Objekt ist nicht vorhanden"


@pytest.fixture
def reworded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fault seam: every QEMU error keeps its class, its text becomes REWORDED. Yields the commands that failed."""
    failed: list[str] = []
    real = QmpSession.cmd

    def cmd(self: QmpSession, name: str, /, _timeout: float | None = None, **args: Any) -> Any:
        try:
            return real(self, name, _timeout, **args)
        except QmpCommandError as exc:
            failed.append(name)
            raise QmpCommandError(exc.command, exc.error_class, REWORDED) from exc
    monkeypatch.setattr(QmpSession, "cmd", cmd)
    yield failed


def _vm(bare_qemu, tmp_path: Path):
    disk = make_image(tmp_path / "a.qcow2", "16M", writes=["write -P 0x5a 0 1M"])
    return bare_qemu(blockdev_args(disk, "da"))


def _cut(qmp: Path, point: str) -> Cut:
    with QmpSession(qmp) as s:
        cut = plan_cut(qmp, workdir_for(work_home(), "v", point), discover(s).disks, point, {})
        take_cut(s, cut)
    return cut


def _driver_cut(qmp: Path, point: str) -> None:
    """A cut through the driver, which takes out what it made when the cut fails."""
    with QmpDriver(qmp, "v").session() as s:
        s.cut(s.inventory().disks, point, {}, workdir_for(work_home(), "v", point))


def _answers(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(2.0)
        try:
            c.connect(str(sock))
        except OSError:
            return False
    return True


def test_cleanup_of_objects_already_gone_reports_nothing(bare_qemu, tmp_path: Path, reworded: list[str]) -> None:
    """Everything the cut made was taken out behind cleanup's back (exports, NBD server, jobs, nodes, bitmap):
    cleanup has nothing left to do, so nothing to report, whatever QEMU would have said about a missing object."""
    vm = _vm(bare_qemu, tmp_path)
    cut = _cut(vm.qmp, "20990101T000000Z-gone")
    with QmpSession(vm.qmp) as s:
        for e in cut.exports:
            s.cmd("block-export-del", id=e, mode="hard")
        while s.cmd("query-block-exports"):
            pass
        s.cmd("nbd-server-stop")
        for j in cut.jobs:
            s.cmd("block-job-cancel", device=j, force=True)
        while s.cmd("query-block-jobs"):
            pass
        for n in cut.attached:
            s.cmd("blockdev-del", node_name=n)
        s.cmd("block-dirty-bitmap-remove", node="da", name=cut.disks[0].new_bitmap)
    assert not _answers(cut.nbd_socket)
    problems = release_cut(cut, success=False)
    assert problems == [], problems
    assert reworded == [], f"cleanup sent commands on objects that were gone: {reworded}"
    assert_clean(vm.qmp, work_home(), {})


def test_another_tools_nbd_server_is_named_whatever_qemu_says(bare_qemu, tmp_path: Path,
                                                              reworded: list[str]) -> None:
    """QEMU runs one NBD server; another tool's, with an export, stops the cut with a message naming that export,
    and the cut's own overlays, jobs and bitmaps are taken out again while the other tool's export stays."""
    vm = _vm(bare_qemu, tmp_path)
    theirs = tmp_path / "other-tool.sock"
    with QmpSession(vm.qmp) as s:
        s.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": str(theirs)}})
        s.cmd("block-export-add", type="nbd", id="other-export", node_name="da", name="x", writable=False)
    with pytest.raises(HypervisorError, match="another tool.*other-export"):
        _driver_cut(vm.qmp, "20990101T000000Z-busy")
    assert qemu_state(vm.qmp) == {"jobs": [], "exports": ["other-export"], "fleece_nodes": [], "bitmaps": {}}
    assert _answers(theirs)


def test_another_tools_nbd_server_without_exports_is_named(bare_qemu, tmp_path: Path, reworded: list[str]) -> None:
    """No export to see it by (QEMU 7.2 cannot be asked whether a server runs): the refusal names that cause."""
    vm = _vm(bare_qemu, tmp_path)
    theirs = tmp_path / "other-tool.sock"
    with QmpSession(vm.qmp) as s:
        s.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": str(theirs)}})
    with pytest.raises(HypervisorError, match="another tool started one, stop it") as err:
        _driver_cut(vm.qmp, "20990101T000000Z-busy")
    assert reworded == ["nbd-server-start"]
    assert qemu_state(vm.qmp) == {"jobs": [], "exports": [], "fleece_nodes": [], "bitmaps": {}}
    assert "\n" not in str(err.value)
    assert _answers(theirs)
