"""Application-consistent backups of libvirt domains: qemu-ga reached through libvirt freezes the guest's ext4
filesystems around ``virDomainBackupBegin``; without an agent the same backup falls back to crash-consistent."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

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
