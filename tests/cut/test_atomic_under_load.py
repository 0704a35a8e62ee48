"""The proof: cuts of real guests under an ordered-write load verify as prefixes of the global write order, and a
deliberately non-atomic cut (each disk cut separately, moments apart) is caught by the same verifier.

Guests run the lab workload: every write carries a global sequence number, goes to one of the disks, and completes
durably before the next is issued. 21 cuts are taken across VMs with 2, 3 and 4 disks, in both attach styles and
both image formats; after each one the VM must be clean (no jobs, exports, overlay nodes, or bitmaps but cutpoint's
newest) and the restored point must verify.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from cutpoint.backup.run import BackupOptions, backup
from cutpoint.cut.cleanup import workdir_for
from cutpoint.drivers.qmp.cleanup import release_cut
from cutpoint.cut.plan import plan_cut
from cutpoint.drivers.qmp.cut import take_cut
from cutpoint.errors import HypervisorError
from cutpoint.drivers.qmp.disks import discover
from cutpoint.drivers.qmp.qmp import QmpSession
from cutpoint.lab import vm as labvm
from cutpoint.lab.verify import verify_dir
from cutpoint.paths import work_home
from cutpoint.reader.export import ExportReader
from cutpoint.vault.vault import Vault
from tests.helpers import assert_clean, cutpoint

pytestmark = pytest.mark.vm
MiB = 1 << 20

SETUPS = [
    ("two", [labvm.DiskSpec(64 * MiB, "raw", "drive"), labvm.DiskSpec(96 * MiB, "raw", "drive")]),
    ("three", [labvm.DiskSpec(64 * MiB), labvm.DiskSpec(64 * MiB, "raw"), labvm.DiskSpec(128 * MiB)]),
    ("four", [labvm.DiskSpec(64 * MiB) for _ in range(4)]),
]
CUTS_PER_VM = 7


@pytest.mark.parametrize("name,disks", SETUPS, ids=[s[0] for s in SETUPS])
def test_cuts_under_load_are_prefixes(name: str, disks: list, tmp_path: Path) -> None:
    vm = labvm.up(name, disks)
    cutpoint("vm", "add", name, "--qmp", str(vm.qmp), check=True)
    ks: list[int] = []
    for i in range(CUTS_PER_VM):
        time.sleep(0.3)
        res = json.loads(cutpoint("backup", name, "--json", check=True).out)
        assert res["mode"] == ("full" if i == 0 else "incremental"), res["full_reason"]
        with QmpSession(vm.qmp) as s:
            nodes = {d.name: d.node for d in discover(s).disks}
        assert_clean(vm.qmp, work_home(), {node: [f"cutpoint-{res['point']}"] for node in nodes.values()})
        out = tmp_path / res["point"]
        cutpoint("restore", name, res["point"], "--to", str(out), check=True)
        verdict = verify_dir(out)
        assert verdict.ok, verdict.violations[:5]
        assert verdict.ndisks == len(disks)
        ks.append(verdict.k)
        for f in out.iterdir():
            f.unlink()
    # the guest kept writing between cuts: each point holds a longer prefix than the one before
    assert ks == sorted(ks) and ks[0] > 0 and ks[-1] > ks[0], ks
    assert vm.running


def _read_export(socket: Path, export: str, to: Path) -> None:
    with ExportReader(socket, export) as r, open(to, "wb") as f:
        size = r.size()
        for off in range(0, size, 8 * MiB):
            f.write(r.pread(off, min(8 * MiB, size - off)))


def test_non_atomic_cut_is_caught(tmp_path: Path) -> None:
    """Built here, not a product option: each disk is cut by its own transaction, 0.5 s after the previous one."""
    vm = labvm.up("naive", [labvm.DiskSpec(64 * MiB) for _ in range(3)])
    time.sleep(1.0)
    out = tmp_path / "naive"
    out.mkdir()
    with QmpSession(vm.qmp) as s:
        disks = discover(s).disks
    for i, d in enumerate(disks):
        cut = plan_cut(vm.qmp, workdir_for(work_home(), "naive", f"disk{i}"), [d], f"naive{i}", {})
        with QmpSession(vm.qmp) as s:
            take_cut(s, cut)
        try:
            _read_export(cut.nbd_socket, cut.disks[0].export, out / f"{d.name}.raw")
        finally:
            assert release_cut(cut, success=False) == []
        time.sleep(0.5)
    verdict = verify_dir(out)
    assert not verdict.ok
    assert any("missing" in v or "expected" in v for v in verdict.violations), verdict.violations[:5]
    # while one atomic cut of the same running VM verifies
    cutpoint("vm", "add", "naive", "--qmp", str(vm.qmp), check=True)
    res = json.loads(cutpoint("backup", "naive", "--json", check=True).out)
    good = tmp_path / "atomic"
    cutpoint("restore", "naive", res["point"], "--to", str(good), check=True)
    assert verify_dir(good).ok


def test_vm_killed_mid_read_leaves_nothing(tmp_path: Path) -> None:
    vm = labvm.up("victim", [labvm.DiskSpec(64 * MiB) for _ in range(2)])
    cutpoint("vm", "add", "victim", "--qmp", str(vm.qmp), check=True)
    vault = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    killed = []

    def kill_qemu(disk: str, done: int, total: int) -> None:
        if not killed and done >= 8 * MiB:
            os.kill(vm.pid, signal.SIGKILL)
            killed.append(disk)

    with pytest.raises(HypervisorError):
        backup(vault, "victim", BackupOptions(progress=kill_qemu))
    assert killed
    assert vault.catalog.points("victim") == []                      # no partial point visible
    assert not any((vault.root / "points").rglob("*.manifest"))
    work = work_home()
    assert not work.exists() or not [p for p in work.rglob("*") if not p.is_dir()]   # overlays, socket gone
