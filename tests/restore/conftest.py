"""Restore tests: restored VMs live in the test's own directory, and are stopped afterwards whatever happens."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def vms_home(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    d = isolated / "vms"
    monkeypatch.setenv("CUTPOINT_VMS", str(d))
    yield d
    for spec in d.glob("*/vm.json"):       # restored VMs and their NBD servers must not outlive the test
        for pidfile in (spec.parent / "qemu.pid", spec.parent / "nbd.pid"):
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        json.loads(spec.read_text())
