"""The console tests' service: a real vault, fake backups on a fake clock, and the console app under TestClient."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cutpoint.api import auth
from cutpoint.api.app import create_app
from cutpoint.catalog.db import VmRecord
from cutpoint.service.clock import FakeClock
from cutpoint.service.daemon import Service
from cutpoint.vault.vault import Vault
from tests.service.fakes import FakeBackup


@pytest.fixture
def env(tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CUTPOINT_VMS", str(isolated / "vms"))      # a restore that runs stays in the test's dirs
    vault = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    clock = FakeClock(datetime(2024, 6, 1, 12, tzinfo=timezone.utc))
    fb = FakeBackup(clock)
    svc = Service(vault, clock=clock, backup_fn=fb)
    vault.catalog.add_vm(VmRecord("web", "qmp", "/nonexistent.sock", "2024-06-01T00:00:00Z", {}))
    tokens = auth.tokens(vault.root)
    with TestClient(create_app(svc, tokens, restore_root=tmp_path)) as client:
        yield client, tokens, svc, fb
    svc.runner.wait(10)
    svc.close()
