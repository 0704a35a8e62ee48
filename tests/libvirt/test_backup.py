"""libvirt domains backed up through libvirt's backup API: lab guests under the ordered-write workload.

Every point must restore to disks that verify as a prefix of the guest's global write order, and after every backup
(successful, failed, or killed) the domain must hold only the checkpoint of its newest point, no backup job, no
cutpoint bitmap but that point's, and the work directory nothing.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from cutpoint.backup.run import BackupOptions, backup
from cutpoint.errors import HypervisorError
from cutpoint.drivers.libvirt import conn as lc
from cutpoint.lab.verify import verify_dir
from cutpoint.paths import work_home
from cutpoint.vault.vault import Vault
from tests.helpers import cutpoint

from .conftest import LabDomain

pytestmark = pytest.mark.vm
MiB = 1 << 20


def _vault() -> Vault:
    return Vault.open(Path(os.environ["CUTPOINT_VAULT"]))


def _backup(vm: str) -> dict:
    return json.loads(cutpoint("backup", vm, "--json", check=True).out)


def _bitmaps(lab: LabDomain) -> list[list[str]]:
    return [sorted(b.get("name", "<anonymous>") for b in n["inserted"].get("dirty-bitmaps") or [])
            for n in lc.block_nodes(lab.dom)]


def _work_files() -> list[Path]:
    w = work_home()
    return [p for p in w.rglob("*") if not p.is_dir()] if w.exists() else []


def assert_clean(lab: LabDomain, point: str | None) -> None:
    """Only the checkpoint and bitmaps of ``point``; no job, no scratch file, no socket."""
    want = [f"cutpoint-{point}"] if point else []
    assert lab.checkpoints() == want
    if lab.dom.isActive():
        assert lc.backup_job(lab.dom) is None
        assert all(names == want for names in _bitmaps(lab)), _bitmaps(lab)
    assert _work_files() == []


def _verify(vm: str, point: str, to: Path, ndisks: int) -> int:
    cutpoint("restore", vm, point, "--to", str(to), check=True)
    v = verify_dir(to)
    assert v.ok, v.violations[:5]
    assert v.ndisks == ndisks
    return v.k


def test_full_and_incremental_points_verify(lab_domain, tmp_path: Path) -> None:
    lab = lab_domain(["qcow2"] * 3, tag="three")
    cutpoint("vm", "add", "three", "--libvirt", lab.name, check=True)
    ks, pauses = [], []
    for i in range(3):
        time.sleep(0.3)
        res = _backup("three")
        assert res["mode"] == ("full" if i == 0 else "incremental"), res["full_reason"]
        if i:
            assert all(0 < d["dirty_bytes"] < d["size"] for d in res["disks"]), res["disks"]
        assert_clean(lab, res["point"])
        ks.append(_verify("three", res["point"], tmp_path / res["point"], 3))
        pauses.append(res["pause_ms"])
    assert ks == sorted(ks) and ks[-1] > ks[0], ks
    vault = _vault()
    cfg = vault.manifest(vault.catalog.point("three", res["point"])).vm_config
    assert cfg["type"] == "libvirt" and f"<name>{lab.name}</name>" in cfg["xml"]
    print(f"backupBegin round trip (upper bound of the guest's I/O pause), 3 disks: {pauses} ms")


def test_domain_killed_mid_read_leaves_nothing(lab_domain, tmp_path: Path) -> None:
    lab = lab_domain(["qcow2"] * 2, tag="victim")
    cutpoint("vm", "add", "victim", "--libvirt", lab.name, check=True)
    first = _backup("victim")["point"]
    killed: list[str] = []

    def kill_qemu(disk: str, done: int, total: int) -> None:
        if not killed and done >= 4 * MiB:
            os.kill(lab.qemu_pid(), signal.SIGKILL)
            killed.append(disk)

    vault = _vault()
    with pytest.raises(HypervisorError):
        backup(vault, "victim", BackupOptions(full=True, progress=kill_qemu))
    assert killed
    assert [p.id for p in vault.catalog.points("victim")] == [first]
    assert_clean(lab, first)                       # the new checkpoint is gone; the domain is not running
    assert not lab.dom.isActive()
    mark = len(lab.text())
    lab.dom.create()
    lab.wait_for("CUTPOINT-WORKLOAD-STARTED", after=mark)
    res = _backup("victim")
    assert res["mode"] == "full" and "missing or inconsistent" in res["full_reason"], res["full_reason"]
    assert_clean(lab, res["point"])               # the bitmaps QEMU left inconsistent are gone too
    _verify("victim", res["point"], tmp_path / "after", 2)


def _die_mid_read(vm: str) -> None:
    def die(disk: str, done: int, total: int) -> None:
        if done >= 4 * MiB:
            os.kill(os.getpid(), signal.SIGKILL)
    backup(_vault(), vm, BackupOptions(full=True, progress=die))


def test_killed_backup_process_is_cleaned_up_by_the_next(lab_domain, tmp_path: Path) -> None:
    lab = lab_domain(["qcow2"] * 2, tag="orphan")
    cutpoint("vm", "add", "orphan", "--libvirt", lab.name, check=True)
    first = _backup("orphan")["point"]
    p = multiprocessing.get_context("fork").Process(target=_die_mid_read, args=("orphan",))
    p.start()
    p.join(120)
    assert p.exitcode == -signal.SIGKILL
    assert lc.backup_job(lab.dom) is not None and len(lab.checkpoints()) == 2 and _work_files()  # what it left
    res = _backup("orphan")
    assert res["mode"] == "incremental", res["full_reason"]      # the first point's checkpoint covered the gap
    assert_clean(lab, res["point"])
    _verify("orphan", res["point"], tmp_path / "next", 2)
    assert first != res["point"]


def test_raw_disk_incrementals_then_full_after_restart(lab_domain, tmp_path: Path) -> None:
    lab = lab_domain(["qcow2", "raw"], tag="raw")
    cutpoint("vm", "add", "raw", "--libvirt", lab.name, check=True)
    assert _backup("raw")["full_reason"] == "first backup"
    time.sleep(0.3)
    res = _backup("raw")
    assert res["mode"] == "incremental", res["full_reason"]
    raw = {d["name"]: d for d in res["disks"]}["vdb"]
    assert raw["mode"] == "incremental" and 0 < raw["dirty_bytes"] < raw["size"]
    assert_clean(lab, res["point"])
    _verify("raw", res["point"], tmp_path / "inc", 2)
    lab.restart()
    res = _backup("raw")
    modes = {d["name"]: d["mode"] for d in res["disks"]}
    assert res["mode"] == "full" and modes == {"vda": "incremental", "vdb": "full"}, res
    assert res["full_reason"].startswith("vdb: dirty bitmap") and "does not survive a restart" in res["full_reason"]
    assert_clean(lab, res["point"])
    _verify("raw", res["point"], tmp_path / "restarted", 2)


def test_vm_cleanup_after_a_killed_backup(lab_domain, tmp_path: Path) -> None:
    """'cutpoint vm cleanup' ends the dead run's libvirt backup job and removes its scratch files at once; the
    checkpoints stay, so the next backup is still an incremental that covers the gap."""
    lab = lab_domain(["qcow2"], tag="cleanup")
    cutpoint("vm", "add", "cl", "--libvirt", lab.name, check=True)
    _backup("cl")
    p = multiprocessing.get_context("fork").Process(target=_die_mid_read, args=("cl",))
    p.start()
    p.join(120)
    assert p.exitcode == -signal.SIGKILL and lc.backup_job(lab.dom) is not None and _work_files()
    res = json.loads(cutpoint("vm", "cleanup", "cl", "--json", check=True).out)
    assert any("libvirt backup job" in r for r in res["removed"]), res
    assert lc.backup_job(lab.dom) is None and _work_files() == [] and len(lab.checkpoints()) == 2
    nxt = _backup("cl")
    assert nxt["mode"] == "incremental", nxt["full_reason"]
    assert_clean(lab, nxt["point"])
    _verify("cl", nxt["point"], tmp_path / "next", 1)


def test_refused_disk_on_a_running_domain(lab_domain, isolated: Path, tmp_path: Path) -> None:
    """A shareable disk on a running domain: the backup is refused before libvirt is asked for anything, and once
    the disk is excluded the same domain backs up, the exclusion recorded on the point."""
    shared = isolated / "shared.img"
    shared.write_bytes(b"\0" * MiB)
    extra = (f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{shared}'/>"
             f"<target dev='vdz' bus='virtio'/><shareable/></disk>")
    lab = lab_domain(["qcow2"], extra_xml=extra, tag="shared")
    cutpoint("vm", "add", "sh", "--libvirt", lab.name, check=True)
    r = cutpoint("backup", "sh", "--json")
    assert r.code == 9 and "share-rw" in r.err and "--exclude-disk vdz" in r.err, (r.code, r.err)
    assert len(r.err.strip().splitlines()) == 1
    assert_clean(lab, None)
    cutpoint("vm", "set", "sh", "--exclude-disk", "vdz", check=True)
    res = _backup("sh")
    assert [d["name"] for d in res["disks"]] == ["vda"] and [k["name"] for k in res["skipped"]] == ["vdz"]
    assert lab.checkpoints() == [f"cutpoint-{res['point']}"] and lc.backup_job(lab.dom) is None
    assert _bitmaps(lab) == [[f"cutpoint-{res['point']}"], []] and _work_files() == []   # vdz untouched
