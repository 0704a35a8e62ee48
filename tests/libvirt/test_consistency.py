"""Application-consistent backups of libvirt domains: qemu-ga reached through libvirt freezes the guest's ext4
filesystems around ``virDomainBackupBegin``; without an agent the same backup falls back to crash-consistent."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from cutpoint.cut.agent import AgentError
from cutpoint.drivers.libvirt.agent import LibvirtAgent
from tests.consistency.support import features
from tests.helpers import cutpoint

pytestmark = pytest.mark.vm


def test_app_consistent_through_libvirts_agent(lab_domain, tmp_path: Path) -> None:
    lab = lab_domain(["qcow2", "qcow2"], tag="app", agent=True)
    cutpoint("vm", "add", "app", "--libvirt", lab.name, check=True)
    res = json.loads(cutpoint("backup", "app", "--consistency", "app", "--json", check=True).out)
    assert res["consistency"] == "app" and res["fallback_reason"] is None, res
    assert res["frozen_ms"] is not None and res["frozen_ms"] >= res["pause_ms"] * 0.5
    out = tmp_path / "app"
    cutpoint("restore", "app", res["point"], "--to", str(out), check=True)
    images = sorted(out.glob("*.raw"))
    assert len(images) == 2, images
    for img in images:
        assert "needs_recovery" not in features(img), img
        fsck = subprocess.run(["e2fsck", "-n", "-f", str(img)], capture_output=True, text=True)
        assert fsck.returncode == 0, (img.name, fsck.stdout[-1000:])      # clean: no journal replay needed
        assert "journal" not in (fsck.stdout + fsck.stderr).lower()       # no "skipping journal recovery"
    status = json.loads(__import__("libvirt_qemu").qemuAgentCommand(
        lab.dom, '{"execute": "guest-fsfreeze-status"}', 5, 0))["return"]
    assert status == "thawed"


def test_no_agent_falls_back_to_crash(lab_domain) -> None:
    lab = lab_domain(["qcow2"], tag="noagent")
    cutpoint("vm", "add", "noagent", "--libvirt", lab.name, check=True)
    res = json.loads(cutpoint("backup", "noagent", "--consistency", "app", "--json", check=True).out)
    assert res["consistency"] == "crash" and res["requested"] == "app"
    assert "no guest agent channel" in res["fallback_reason"], res["fallback_reason"]


def _last_seq(lab) -> int:  # type: ignore[no-untyped-def]
    seqs = re.findall(r"CUTPOINT-WORKLOAD seq=(\d+)", lab.text())
    return int(seqs[-1]) if seqs else 0


def test_agent_hanging_in_freeze_falls_back_and_the_guest_is_thawed(lab_domain) -> None:
    """qemu-ga hangs inside guest-fsfreeze-freeze (its hook sleeps 6 s before freezing) behind libvirt's relay: the
    backup goes on crash-consistent with the reason, and the guest ends thawed and writing."""
    lab = lab_domain(["qcow2", "qcow2"], tag="hang", agent=True)
    cutpoint("vm", "add", "hang", "--libvirt", lab.name, check=True)
    cutpoint("vm", "set", "hang", "--consistency", "app", "--freeze-timeout", "2", check=True)
    agent = LibvirtAgent(lab.uri, lab.name)
    try:
        assert agent.exec("/bin/sh", ["-c", "echo 6 > /run/cutpoint-freeze-delay"], 10).exitcode == 0
        t0 = time.monotonic()
        res = json.loads(cutpoint("backup", "hang", "--json", check=True).out)
        assert (res["consistency"], res["requested"], res["frozen_ms"]) == ("crash", "app", None), res
        assert "did not answer" in res["fallback_reason"] and "2 s" in res["fallback_reason"], res
        assert time.monotonic() - t0 < 30
        deadline = time.monotonic() + 20               # the agent may still be busy with the late freeze
        while True:
            try:
                state = agent.status(2)
                break
            except AgentError:
                assert time.monotonic() < deadline, "the agent never answered after the backup"
                time.sleep(0.5)
        assert state == "thawed", (state, res["warnings"])
        before, deadline = _last_seq(lab), time.monotonic() + 30
        while _last_seq(lab) <= before:                 # the guest writes on
            assert time.monotonic() < deadline, f"the guest stopped writing at seq {before}"
            time.sleep(0.5)
    finally:
        agent.close()
