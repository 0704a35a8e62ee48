"""Real lab VMs: boot, workload progress, clean stop, verify after stop, restart-resume, and no QEMU left behind."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cutpoint.errors import CutpointError, NotFoundError, UsageError
from cutpoint.lab import vm as labvm
from cutpoint.lab.verify import verify_dir
from cutpoint.lab.vm import DiskSpec
from tests.helpers import cutpoint

pytestmark = pytest.mark.vm


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.fixture
def lab(isolated: Path) -> Iterator[None]:
    """Stops every lab VM the test started, even when it fails."""
    yield
    for v in labvm.list_vms():
        labvm.down(v.name)
        assert _gone(v.pid)


def test_boot_two_disks_run_stop_verify(lab: None) -> None:
    # A read-only third disk: the workload skips it, the verifier reports it as ignored.
    vm = labvm.up("two", [DiskSpec(32 << 20), DiskSpec(16 << 20, fmt="raw"), DiskSpec(8 << 20, extra="read-only=on")],
                  seed=42)
    assert vm.running and vm.accel in ("kvm", "tcg") and vm.boot_seconds and vm.boot_seconds > 0
    assert [d["node"] for d in vm.disks] == ["disk0", "disk1", "disk2"]
    assert [Path(d["path"]).name for d in vm.disks] == ["disk0.qcow2", "disk1.raw", "disk2.qcow2"]
    assert "skipping read-only /dev/vdc" in vm.console_text()
    saved = json.loads((vm.dir / "vm.json").read_text())
    assert saved["pid"] == vm.pid and saved["boot_seconds"] == vm.boot_seconds and saved["seed"] == 42
    assert labvm.get("two").pid == vm.pid and [v.name for v in labvm.list_vms()] == ["two"]

    vm.wait_for(r"CUTPOINT-WORKLOAD seq=\d+", timeout=20)  # progress lines: the workload is writing
    with pytest.raises(UsageError, match="already running"):
        labvm.up("two", [DiskSpec(32 << 20)])
    labvm.down("two")
    assert _gone(vm.pid) and not labvm.get("two").running
    labvm.down("two")  # idempotent

    verdict = verify_dir(vm.dir)  # every write completed in order, so the stopped disks are a prefix
    assert verdict.ok, verdict.summary()
    assert verdict.k >= (vm.last_seq() or 1) > 0 and verdict.seed == 42 and verdict.ndisks == 2
    assert verdict.ignored == [str(vm.dir / "disk2.qcow2")]
    labvm.remove("two")
    assert not vm.dir.exists()
    with pytest.raises(NotFoundError):
        labvm.get("two")


def test_drive_attach_with_cdrom_via_cli_and_resume(lab: None) -> None:
    r = cutpoint("lab", "up", "legacy", "--sizes", "16M,16M", "--attach", "drive", "--cdrom", "--slots", "64")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["running"] and info["boot_seconds"] > 0 and info["cdrom"]
    assert [d["drive"] for d in info["disks"]] == ["drive-disk0", "drive-disk1"]
    assert all(d["node"] and d["node"].startswith("#block") for d in info["disks"])  # generated node names
    vm = labvm.get("legacy")
    vm.wait_for(r"CUTPOINT-WORKLOAD seq=\d+", timeout=20)
    assert "legacy" in cutpoint("lab", "list").out
    assert cutpoint("lab", "down", "legacy").code == 0
    k1 = verify_dir(vm.dir).k
    assert k1 > 0

    again = labvm.up("legacy", [DiskSpec(16 << 20, attach="drive")] * 2, slots=64, cdrom=True)  # same disks
    first = int(again.wait_for(r"CUTPOINT-WORKLOAD-STARTED seq=(\d+)").group(1))
    assert first == k1 + 1 and again.seed == info["seed"]
    labvm.down("legacy")
    v = verify_dir(vm.dir)
    assert v.ok and v.k > k1, v.summary()


def test_failures_leave_no_qemu(lab: None) -> None:
    with pytest.raises(CutpointError, match="QEMU failed to start"):
        labvm.up("bad", [DiskSpec(8 << 20)], extra_args=["-no-such-option"])
    with pytest.raises(CutpointError, match="no 'CUTPOINT-WORKLOAD-STARTED' on the console"):
        labvm.up("slow", [DiskSpec(8 << 20)], timeout=0.5)
    pid = labvm.get("slow").pid
    assert pid > 0 and _gone(pid)
    with pytest.raises(UsageError, match="too small"):
        labvm.up("tiny", [DiskSpec(64 << 10)])
    with pytest.raises(UsageError, match="name"):
        labvm.up("../x", [DiskSpec(8 << 20)])
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_lab_qemu(int(p))]


def _is_lab_qemu(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"qemu-system" in cmd and os.environ["CUTPOINT_LAB"].encode() in cmd and not _gone(pid)
