"""Nothing stays in QEMU or on disk after a backup: not after success, not after a failure mid-read, not after a
cutpoint process that died between the cut and its cleanup."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cutpoint.backup.run import BackupOptions, backup
from cutpoint.cut.cleanup import workdir_for
from cutpoint.cut.plan import plan_cut
from cutpoint.drivers.qmp.cut import take_cut
from cutpoint.errors import CutpointError
from cutpoint.drivers.qmp.disks import discover
from cutpoint.drivers.qmp.qmp import QmpSession
from cutpoint.paths import work_home
from cutpoint.vault.vault import Vault
from tests.helpers import assert_clean, blockdev_args, cutpoint, drive_args, make_image


def _two_disk_vm(bare_qemu, tmp_path: Path):
    a = make_image(tmp_path / "a.qcow2", "32M", writes=["write -P 0x5a 0 6M"])
    b = make_image(tmp_path / "b.raw", "32M", "raw", writes=["write -P 0x6b 8M 2M"])
    # a bitmap of another tool must survive everything cutpoint does
    vm = bare_qemu(blockdev_args(a, "da") + drive_args(b, "db", "raw"))
    with QmpSession(vm.qmp) as s:
        s.cmd("block-dirty-bitmap-add", node="da", name="other-tool", persistent=True)
    return vm


def _dead_cut(qmp: Path, prev: str) -> str:
    """What a cutpoint process that died right after its cut leaves: overlays, jobs, exports, NBD server, new
    bitmaps, and the previous point's bitmap disabled. Returns the dead run's point id."""
    dead = "20990101T000000Z-dead"
    with QmpSession(qmp) as s:
        disks = discover(s).disks
        take_cut(s, plan_cut(qmp, workdir_for(work_home(), "v", dead), disks, dead,
                             {d.name: "cutpoint-" + prev for d in disks}))
    return dead


def _assert_only_bitmap(qmp: Path, point: str) -> None:
    """Nothing left in QEMU but ``point``'s bitmap on each disk (and the other tool's, untouched)."""
    with QmpSession(qmp) as s:
        db_node = next(d.node for d in discover(s).disks if d.name == "db")
    assert_clean(qmp, work_home(), {"da": ["cutpoint-" + point, "other-tool"], db_node: ["cutpoint-" + point]})


def test_success_leaves_only_the_new_bitmap(bare_qemu, tmp_path: Path) -> None:
    vm = _two_disk_vm(bare_qemu, tmp_path)
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    p1 = json.loads(cutpoint("backup", "v", "--json", check=True).out)["point"]
    with QmpSession(vm.qmp) as s:
        db_node = next(d.node for d in discover(s).disks if d.name == "db")
    assert_clean(vm.qmp, work_home(), {"da": ["cutpoint-" + p1, "other-tool"], db_node: ["cutpoint-" + p1]})
    p2 = json.loads(cutpoint("backup", "v", "--json", check=True).out)["point"]
    assert_clean(vm.qmp, work_home(), {"da": ["cutpoint-" + p2, "other-tool"], db_node: ["cutpoint-" + p2]})


def test_failure_mid_read_cleans_up_and_keeps_the_chain(bare_qemu, tmp_path: Path) -> None:
    vm = _two_disk_vm(bare_qemu, tmp_path)
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    p1 = json.loads(cutpoint("backup", "v", "--json", check=True).out)["point"]

    def fail(disk: str, done: int, total: int) -> None:
        if done >= 8 << 20:
            raise CutpointError("injected read failure")

    vault = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    with pytest.raises(CutpointError, match="injected"):
        backup(vault, "v", BackupOptions(progress=fail))
    assert [p.id for p in vault.catalog.points("v")] == [p1]           # no partial point
    with QmpSession(vm.qmp) as s:
        db_node = next(d.node for d in discover(s).disks if d.name == "db")
    # the failed backup's bitmap was merged back into p1's, which records again
    assert_clean(vm.qmp, work_home(), {"da": ["cutpoint-" + p1, "other-tool"], db_node: ["cutpoint-" + p1]})
    res = json.loads(cutpoint("backup", "v", "--json", check=True).out)
    assert res["mode"] == "incremental" and res["parent"] == p1


def test_leftovers_of_a_dead_cutpoint_are_swept(bare_qemu, tmp_path: Path) -> None:
    vm = _two_disk_vm(bare_qemu, tmp_path)
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    p1 = json.loads(cutpoint("backup", "v", "--json", check=True).out)["point"]
    _dead_cut(vm.qmp, p1)
    res = json.loads(cutpoint("backup", "v", "--json", check=True).out)
    assert res["mode"] == "incremental", res["full_reason"]
    _assert_only_bitmap(vm.qmp, res["point"])


def test_full_read_leaves_only_the_new_bitmap(bare_qemu, tmp_path: Path) -> None:
    """A disk read in full although its bitmap was usable (--full) must not keep the bitmap it did not use."""
    vm = _two_disk_vm(bare_qemu, tmp_path)
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    cutpoint("backup", "v", "--json", check=True)
    res = json.loads(cutpoint("backup", "v", "--full", "--json", check=True).out)
    assert res["mode"] == "full" and "--full" in res["full_reason"]
    _assert_only_bitmap(vm.qmp, res["point"])


def test_vm_cleanup_removes_a_dead_runs_leftovers_now(bare_qemu, tmp_path: Path) -> None:
    """'cutpoint vm cleanup' does the next backup's sweep at once; the bitmaps stay for that backup to merge."""
    vm = _two_disk_vm(bare_qemu, tmp_path)
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    p1 = json.loads(cutpoint("backup", "v", "--json", check=True).out)["point"]
    dead = _dead_cut(vm.qmp, p1)
    res = json.loads(cutpoint("vm", "cleanup", "v", "--json", check=True).out)
    assert any(r.startswith("cutpoint-export-") for r in res["removed"]), res
    assert any(r.startswith("cutpoint-job-") for r in res["removed"]), res
    with QmpSession(vm.qmp) as s:
        db_node = next(d.node for d in discover(s).disks if d.name == "db")
    both = sorted(["cutpoint-" + p1, "cutpoint-" + dead])
    assert_clean(vm.qmp, work_home(), {"da": sorted(both + ["other-tool"]), db_node: both})
    assert "nothing left behind" in cutpoint("vm", "cleanup", "v", check=True).out
    nxt = json.loads(cutpoint("backup", "v", "--json", check=True).out)
    assert nxt["mode"] == "incremental" and nxt["parent"] == p1


def test_nbd_server_of_a_run_killed_before_its_first_export(bare_qemu, tmp_path: Path) -> None:
    """A cutpoint killed between nbd-server-start and its first block-export-add leaves an NBD server with no
    export; its socket in that run's work directory still answers, which tells that it is cutpoint's to stop."""
    vm = _two_disk_vm(bare_qemu, tmp_path)
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    wd = workdir_for(work_home(), "v", "20990101T000000Z-dead")
    wd.mkdir(parents=True)
    with QmpSession(vm.qmp) as s:
        s.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": str(wd / "nbd.sock")}})
    res = json.loads(cutpoint("backup", "v", "--json", check=True).out)
    _assert_only_bitmap(vm.qmp, res["point"])
