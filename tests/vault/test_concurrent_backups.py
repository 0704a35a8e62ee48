"""Backups of two VMs into one vault run at the same time; a second backup of the same VM is refused with one line
naming the live holder; a backup killed with its lock leaves no stale lock: the next one simply runs, and the
dead process's registration is cleared. Every point restores byte-identical afterwards."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import cutpoint, guest_write
from tests.vault.util import (files, killed_at, one_line_error, points, restored, snapshot, start_stopped,
                              two_disk_vm, vault_dir, verified)


def test_concurrent_backups(bare_qemu, tmp_path: Path) -> None:
    v1, img1 = two_disk_vm(bare_qemu, tmp_path, "v1")
    v2, img2 = two_disk_vm(bare_qemu, tmp_path, "v2")
    guest_write(v2.qmp, "da-dev", "write -P 0x77 0 4M")
    want: dict[tuple[str, str], dict[str, bytes]] = {}

    # truly simultaneous
    at1, at2 = snapshot(img1), snapshot(img2)
    procs = [subprocess.Popen([sys.executable, "-m", "cutpoint.cli.main", "backup", vm, "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for vm in ("v1", "v2")]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert [r[2] for r in results] == [0, 0], [r[1] for r in results]
    want[("v1", json.loads(results[0][0])["point"])] = at1
    want[("v2", json.loads(results[1][0])["point"])] = at2

    # v1 held in flight: v2 still backs up, a second v1 is refused naming the live holder
    guest_write(v1.qmp, "da-dev", "write -P 0x78 4M 4M")
    at1 = snapshot(img1)
    held = start_stopped("after-chunks", "backup", "v1", "--json")
    try:
        want[("v2", json.loads(cutpoint("backup", "v2", "--json", check=True).out)["point"])] = at2
        one_line_error(cutpoint("backup", "v1"), 8, "VM 'v1' is busy", f"pid {held.pid} (cutpoint backup v1",
                       "vm-v1.lock")
    finally:
        held.send_signal(signal.SIGCONT)
    out, err = held.communicate(timeout=60)
    assert held.returncode == 0, err
    want[("v1", json.loads(out)["point"])] = at1

    # killed while holding the lock: the lock is not stale, the dead registration is cleared
    guest_write(v1.qmp, "da-dev", "write -P 0x79 8M 4M")
    killed_at("after-manifest", "backup", "v1")
    assert (vault_dir() / "locks" / "vm-v1.lock").read_text().startswith("pid ")   # a dead pid's text is left ...
    want[("v1", json.loads(cutpoint("backup", "v1", "--json", check=True).out)["point"])] = snapshot(img1)
    assert files("locks", "writer-*") == []                                          # ... and harms nothing

    assert verified().ok
    assert sorted(points("v1") + points("v2")) == sorted(p for _, p in want)
    for (vm, point), disks in want.items():
        assert restored(point, tmp_path / f"r-{point}", vm) == disks, (vm, point)
