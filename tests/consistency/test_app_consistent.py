"""Application-consistent backups of a real guest: qemu-ga freezes its ext4 filesystems (written through by the
file workload) for the cut; the restored filesystems are clean (no journal to replay, e2fsck -fn finds nothing)
where a crash-consistent point of the same guest needs journal recovery; pre/post scripts run in the guest, and a
failing pre-script makes the same backup crash-consistent with the reason recorded."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cutpoint.lab import vm as labvm
from tests.consistency.support import features, guest_sh
from tests.consistency.support import cli as cutpoint

pytestmark = pytest.mark.vm
MiB = 1 << 20

SCRIPTS = r"""
printf '#!/bin/sh\necho pre-ran > /mnt/vda/pre-marker\n' > /run/pre
printf '#!/bin/sh\necho post-ran > /run/post-marker\n' > /run/post
printf '#!/bin/sh\necho cannot quiesce the database >&2\nexit 3\n' > /run/bad-pre
chmod +x /run/pre /run/post /run/bad-pre
"""


def _restore(point: str, to: Path) -> list[Path]:
    cutpoint("restore", "app", point, "--to", str(to), check=True)
    return sorted(to.iterdir())


def test_app_consistent_point_restores_clean_filesystems(tmp_path: Path) -> None:
    vm = labvm.up("app", [labvm.DiskSpec(48 * MiB), labvm.DiskSpec(48 * MiB, "raw")], agent=True)
    assert guest_sh(vm, SCRIPTS).exitcode == 0
    cutpoint("vm", "add", "app", "--qmp", str(vm.qmp), check=True)

    # contrast first: a crash-consistent cut of a mounted, busy ext4 needs its journal replayed
    crash = json.loads(cutpoint("backup", "app", "--json", check=True).out)
    assert (crash["consistency"], crash["requested"], crash["frozen_ms"]) == ("crash", "crash", None)
    imgs = _restore(crash["point"], tmp_path / "crash")
    assert len(imgs) == 2 and all("needs_recovery" in features(i) for i in imgs)

    cutpoint("vm", "set", "app", "--consistency", "app", "--pre-script", "/run/pre", "--post-script", "/run/post",
             check=True)
    res = json.loads(cutpoint("backup", "app", "--json", check=True).out)
    assert (res["consistency"], res["requested"], res["fallback_reason"]) == ("app", "app", None), res
    assert 0 < res["pause_ms"] <= res["frozen_ms"] < 10_000 and res["warnings"] == []
    assert guest_sh(vm, "cat /run/post-marker").out == "post-ran\n"
    for img in _restore(res["point"], tmp_path / "app"):
        assert "needs_recovery" not in features(img), img
        fsck = subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        assert "journal" not in (fsck.stdout + fsck.stderr).lower()       # no "skipping journal recovery"
    marker = subprocess.run(["debugfs", "-R", "cat /pre-marker", str(tmp_path / "app" / "disk0.raw")],
                            capture_output=True, text=True)
    assert marker.stdout == "pre-ran\n"                                  # the pre-script ran before the cut
    listed = json.loads(cutpoint("points", "app", "--json", check=True).out)
    assert [p["consistency"] for p in listed] == ["crash", "app"]

    # a failing pre-script: the same backup goes on crash-consistent, and the post-script still runs
    cutpoint("vm", "set", "app", "--pre-script", "/run/bad-pre", check=True)
    assert guest_sh(vm, "rm -f /run/post-marker").exitcode == 0
    res = json.loads(cutpoint("backup", "app", "--json", check=True).out)
    assert (res["consistency"], res["requested"], res["frozen_ms"]) == ("crash", "app", None)
    assert res["fallback_reason"] == "pre-script /run/bad-pre exited with 3: cannot quiesce the database"
    assert guest_sh(vm, "cat /run/post-marker").out == "post-ran\n"
    assert vm.running
