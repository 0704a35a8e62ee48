"""An API token asks for images to be restored outside the service's restore root: straight to another absolute
directory, up through ``..``, or through a symlink inside the root. Each is refused with a 4xx naming the root, and
nothing is written outside it; a target inside the root restores as before. The job re-checks the target when it
runs, so a symlink swapped in after the request was accepted is refused too."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cutpoint.api import auth
from cutpoint.api.app import create_app
from cutpoint.errors import UsageError
from cutpoint.restore.orchestrator import restore
from cutpoint.restore.targets import Images
from cutpoint.service.clock import FakeClock
from cutpoint.service.daemon import Service
from cutpoint.vault.vault import Vault
from tests.vault.util import backup, restored, two_disk_vm


@pytest.fixture
def point(bare_qemu, tmp_path: Path) -> tuple[str, dict[str, bytes]]:
    two_disk_vm(bare_qemu, tmp_path)
    p = backup()["point"]
    return p, restored(p, tmp_path / "ref")


@pytest.fixture
def client(tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    vault = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    svc = Service(vault, clock=FakeClock(datetime(2024, 6, 1, 12, tzinfo=timezone.utc)))
    token = auth.load_or_create(vault.root)
    with TestClient(create_app(svc, token, restore_root=root)) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c, svc, root
    svc.runner.wait(30)
    svc.close()


def _refused(r, root: Path) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()
    assert str(root) in body["reason"] and "restore root" in body["reason"], body


def test_targets_outside_the_restore_root_are_refused(point, client, tmp_path: Path) -> None:
    p, ref = point
    c, svc, root = client
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (root / "real").mkdir()
    for to in (outside / "direct", root / ".." / "outside" / "up", root / "link", root / "link" / "below",
               root / "real" / ".." / ".." / "outside"):
        _refused(c.post("/vms/v/restore", json={"point": p, "to": str(to)}), root)
    (root / "loop").symlink_to(root / "loop")
    for to in (f"{root}/nul\u0000byte", str(root / "loop" / "x")):          # unusable paths: a 4xx, not a 500
        _refused(c.post("/vms/v/restore", json={"point": p, "to": to}), root)
    assert list(outside.iterdir()) == [] and not (tmp_path / "up").exists()
    assert svc.jobs.list(kind="restore") == []                   # refused before any job was queued

    r = c.post("/vms/v/restore", json={"point": p, "to": str(root / "real" / ".." / "ok")})   # stays inside
    assert r.status_code == 202, r.text
    job = svc.jobs.get(r.json()["job"])
    svc.runner.wait(60)
    job = svc.jobs.get(job.id)
    assert job.state == "succeeded", job.error
    assert {d: (root / "ok" / f"{d}.raw").read_bytes() for d in ref} == ref


def test_the_job_checks_the_target_again_when_it_runs(point, tmp_path: Path) -> None:
    """Accepted while a real directory, swapped for a symlink before the job writes: refused, nothing outside."""
    p, _ = point
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "out").symlink_to(outside)
    vault = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    try:
        with pytest.raises(UsageError, match="outside the restore root"):
            restore(vault, "v", p, Images(root / "out", within=root))
    finally:
        vault.close()
    assert list(outside.iterdir()) == []
