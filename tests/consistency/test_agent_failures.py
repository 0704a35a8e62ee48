"""The agent path failing on a real guest: hanging inside the freeze, stopped (SIGSTOP), killed, or missing. Each
backup completes crash-consistent with the reason recorded, and the guest is thawed and still writing afterwards.
The missing-agent guest also carries the host-caching claim: with cache=writeback and cache=unsafe disks the cut
verifies as a prefix of the ordered workload, writeback gets no warning and unsafe gets its note."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cutpoint.drivers.qmp.qmp import QmpSession
from cutpoint.lab import vm as labvm
from cutpoint.lab.verify import verify_dir
from tests.consistency.support import freeze_status, guest_sh, keeps_writing
from tests.consistency.support import cli as cutpoint

pytestmark = pytest.mark.vm
MiB = 1 << 20


def _backup(name: str) -> dict:
    return json.loads(cutpoint("backup", name, "--json", check=True).out)


def _agent_port_open(vm: labvm.LabVM) -> bool:
    with QmpSession(vm.qmp) as s:
        return any(c["label"] == "qga0" and c["frontend-open"] for c in s.cmd("query-chardev"))


def test_hanging_stopped_and_killed_agent_fall_back_and_leave_the_guest_thawed() -> None:
    vm = labvm.up("flaky", [labvm.DiskSpec(32 * MiB), labvm.DiskSpec(32 * MiB)], agent=True)
    cutpoint("vm", "add", "flaky", "--qmp", str(vm.qmp), check=True)
    cutpoint("vm", "set", "flaky", "--consistency", "app", "--freeze-timeout", "2", check=True)

    # 1. qemu-ga hangs inside guest-fsfreeze-freeze (its fsfreeze hook sleeps 6 s before freezing)
    assert guest_sh(vm, "echo 6 > /run/cutpoint-freeze-delay").exitcode == 0
    t0 = time.monotonic()
    res = _backup("flaky")
    assert (res["consistency"], res["requested"], res["frozen_ms"]) == ("crash", "app", None)
    assert res["fallback_reason"].startswith("guest-fsfreeze-freeze did not answer within 2 s")
    assert res["warnings"] == []          # the queued thaw ran after the late freeze, and was confirmed
    assert time.monotonic() - t0 < 20
    assert freeze_status(vm) == "thawed" and keeps_writing(vm)
    assert "CUTPOINT-HOOK freeze delayed 6s" in vm.console_text()

    # 2. qemu-ga stopped (SIGSTOP) for 6 s: not answering at all
    stop = "(sleep 0.3; kill -STOP $PPID; sleep 6; kill -CONT $PPID) </dev/null >/dev/null 2>&1 &"
    assert guest_sh(vm, stop).exitcode == 0
    time.sleep(1.0)
    res = _backup("flaky")
    assert (res["consistency"], res["requested"]) == ("crash", "app")
    assert res["fallback_reason"].startswith("guest agent not answering: ")
    assert "did not answer guest-sync-delimited within 2 s" in res["fallback_reason"]
    assert freeze_status(vm, within=20) == "thawed" and keeps_writing(vm)       # after SIGCONT

    # 3. qemu-ga killed
    assert guest_sh(vm, "(sleep 0.3; kill -KILL $PPID) </dev/null >/dev/null 2>&1 &").exitcode == 0
    deadline = time.monotonic() + 10
    while _agent_port_open(vm):
        assert time.monotonic() < deadline, "qemu-ga did not die"
        time.sleep(0.1)
    res = _backup("flaky")
    assert (res["consistency"], res["requested"]) == ("crash", "app")
    assert res["fallback_reason"].startswith("qemu-ga is not running in the guest")
    assert keeps_writing(vm) and vm.running
    assert [p["consistency"] for p in json.loads(cutpoint("points", "flaky", "--json", check=True).out)] \
        == ["crash"] * 3


def test_missing_agent_and_host_caching(tmp_path: Path) -> None:
    vm = labvm.up("noagent", [labvm.DiskSpec(32 * MiB, extra="cache=writeback"),
                              labvm.DiskSpec(32 * MiB, "raw", extra="cache=unsafe")])
    cutpoint("vm", "add", "noagent", "--qmp", str(vm.qmp), check=True)
    res = json.loads(cutpoint("backup", "noagent", "--consistency", "app", "--json", check=True).out)
    assert (res["consistency"], res["requested"], res["frozen_ms"]) == ("crash", "app", None)
    assert res["fallback_reason"].startswith("no guest agent channel")
    assert len(res["warnings"]) == 1 and res["warnings"][0].startswith("disk disk1 has cache.no-flush=on")
    assert {d["name"]: d["cache"]["writeback"] for d in res["disks"]} == {"disk0": True, "disk1": True}
    cutpoint("restore", "noagent", res["point"], "--to", str(tmp_path / "r"), check=True)
    verdict = verify_dir(tmp_path / "r")
    assert verdict.ok and verdict.k > 0, verdict.violations[:5]
    assert keeps_writing(vm)
