"""Another client holds the QMP monitor when cleanup comes: QEMU still runs with the cut's exports, jobs and overlays
in it, so cleanup reports that as a problem (the backup shows it as a warning) instead of a clean finish; only a
QEMU that is gone leaves nothing but files."""

from __future__ import annotations

import socket
from pathlib import Path

from cutpoint.cut.cleanup import workdir_for
from cutpoint.cut.plan import plan_cut
from cutpoint.drivers.qmp.cleanup import release_cut
from cutpoint.drivers.qmp.cut import take_cut
from cutpoint.drivers.qmp.disks import discover
from cutpoint.drivers.qmp.qmp import QmpSession
from cutpoint.paths import work_home
from tests.helpers import blockdev_args, make_image, qemu_state


def test_a_held_monitor_during_cleanup_is_a_problem(bare_qemu, tmp_path: Path) -> None:
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "16M"), "da"))
    point = "20990101T000000Z-held"
    with QmpSession(vm.qmp) as s:
        cut = plan_cut(vm.qmp, workdir_for(work_home(), "v", point), discover(s).disks, point, {})
        take_cut(s, cut)
    holder = socket.socket(socket.AF_UNIX)          # fault seam: another QMP client, greeted, holding the monitor
    try:
        holder.connect(str(vm.qmp))
        assert b"QMP" in holder.recv(4096)
        problems = release_cut(cut, success=True)
    finally:
        holder.close()
    assert len(problems) == 1 and "cutpoint vm cleanup v" in problems[0], problems
    st = qemu_state(vm.qmp)
    assert st["exports"] and st["jobs"] and st["fleece_nodes"], st        # the problem is real: all still there


def test_a_qemu_that_is_gone_leaves_no_problem(bare_qemu, tmp_path: Path) -> None:
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "16M"), "da"))
    point = "20990101T000000Z-gone"
    with QmpSession(vm.qmp) as s:
        cut = plan_cut(vm.qmp, workdir_for(work_home(), "v", point), discover(s).disks, point, {})
        take_cut(s, cut)
    vm.kill()
    assert release_cut(cut, success=False) == []
    assert not cut.workdir.exists()
