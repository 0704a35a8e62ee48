"""The API's ``/report`` keeps its document exactly (other tools read it): every key, in order, at every level, and
every value, over a window that holds a success, a failure, an interruption, and a VM whose last success is older.
``/report/usage`` is the CLI's ``cutpoint report --json``."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cutpoint.api import auth
from cutpoint.api.app import create_app
from cutpoint.backup.result import BackupResult
from cutpoint.backup.run import BackupOptions
from cutpoint.catalog.db import VmRecord
from cutpoint.errors import HypervisorError
from cutpoint.service.clock import FakeClock
from cutpoint.service.daemon import Service
from cutpoint.vault.vault import Vault
from tests.helpers import cutpoint
from tests.service.fakes import FakeBackup
from tests.service.test_report import SHAPE, build_vault, shape

START = datetime(2024, 6, 1, 12, tzinfo=timezone.utc)
JOB_KEYS = ["id", "kind", "vm", "state", "trigger", "slot", "attempt", "started", "ended", "duration_s", "bytes",
            "point", "error", "pid", "detail"]


class FailsFor:
    """The fake backup, failing for one VM."""

    def __init__(self, fb: FakeBackup, vm: str) -> None:
        self.fb, self.vm = fb, vm

    def __call__(self, vault: Vault, vm: str, opts: BackupOptions) -> BackupResult:
        if vm == self.vm:
            raise HypervisorError(f"QMP socket of {vm} refuses connections (injected)")
        return self.fb(vault, vm, opts)


@pytest.fixture
def client(tmp_path: Path):
    vault = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    clock = FakeClock(START)
    svc = Service(vault, clock=clock, backup_fn=FailsFor(FakeBackup(clock), "db"), inline=True)
    for name in ("web", "db", "new", "old"):
        vault.catalog.add_vm(VmRecord(name, "qmp", f"/nonexistent/{name}.sock", "2024-06-01T00:00:00Z", {}))
    token = auth.load_or_create(vault.root)
    with TestClient(create_app(svc, token, restore_root=tmp_path)) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c, svc, clock
    svc.close()


def test_api_report_document_is_unchanged(client) -> None:
    c, svc, clock = client
    assert c.post("/policies", json={"name": "daily", "schedule": {"frequency": "daily", "time": "02:00"}}
                  ).status_code == 201
    for vm in ("web", "db"):
        assert c.put(f"/vms/{vm}/policy", json={"policy": "daily"}).status_code == 200
    for vm in ("web", "old"):                       # outside the window by the time of the report
        assert c.post(f"/vms/{vm}/backup").status_code == 202
    clock.advance(timedelta(hours=30))
    assert c.post("/vms/web/backup").status_code == 202
    clock.advance(timedelta(minutes=5))
    assert c.post("/vms/db/backup").status_code == 202
    j = svc.jobs.start("backup", "new", "manual", clock.now())
    svc.jobs.finish(j, "interrupted", clock.now(), error="interrupted (Ctrl-C or SIGTERM)")
    clock.advance(timedelta(minutes=5))

    doc = c.get("/report").json()
    jobs = {j["id"]: j for j in c.get("/jobs").json()}
    assert sorted(jobs) == [1, 2, 3, 4, 5] and all(list(j) == JOB_KEYS for j in jobs.values())
    assert [jobs[i]["state"] for i in (3, 4, 5)] == ["succeeded", "failed", "interrupted"]
    pts = {vm: [p["id"] for p in c.get(f"/vms/{vm}/points").json()] for vm in ("web", "old")}
    assert len(pts["web"]) == 2 and re.fullmatch(r"20240602T180000Z-[0-9a-f]{4}", pts["web"][1]), pts
    vm = {"kind": "qmp", "added": "2024-06-01T00:00:00Z"}
    assert doc == {
        "generated": "2024-06-02T18:10:00.000Z", "window_hours": 24, "service_running": False,
        "vms": [
            {"name": "db", **vm, "address": "/nonexistent/db.sock", "policy": "daily", "points": 0,
             "last_point": None, "last_backup": jobs[4], "next_run": "2024-06-03T02:00:00.000Z", "backups_ok": 0,
             "jobs_failed": 1, "jobs_interrupted": 0, "last_success": None, "stored_bytes": 0, "protected": False},
            {"name": "new", **vm, "address": "/nonexistent/new.sock", "policy": None, "points": 0,
             "last_point": None, "last_backup": jobs[5], "next_run": None, "backups_ok": 0, "jobs_failed": 0,
             "jobs_interrupted": 1, "last_success": None, "stored_bytes": 0, "protected": False},
            {"name": "old", **vm, "address": "/nonexistent/old.sock", "policy": None, "points": 1,
             "last_point": pts["old"][0], "last_backup": jobs[2], "next_run": None, "backups_ok": 0,
             "jobs_failed": 0, "jobs_interrupted": 0, "last_success": "2024-06-01T12:00:00.000Z",
             "stored_bytes": 0, "protected": False},
            {"name": "web", **vm, "address": "/nonexistent/web.sock", "policy": "daily", "points": 2,
             "last_point": pts["web"][1], "last_backup": jobs[3], "next_run": "2024-06-03T02:00:00.000Z",
             "backups_ok": 1, "jobs_failed": 0, "jobs_interrupted": 0, "last_success": "2024-06-02T18:00:00.000Z",
             "stored_bytes": 0, "protected": True},
        ],
        "jobs": {"interrupted": 1, "failed": 1, "succeeded": 1},
        "failures": [jobs[4]],
    }
    # key order too, at every level (a dict comparison ignores it)
    assert list(doc) == ["generated", "window_hours", "service_running", "vms", "jobs", "failures"]
    assert all(list(v) == ["name", "kind", "address", "added", "policy", "points", "last_point", "last_backup",
                           "next_run", "backups_ok", "jobs_failed", "jobs_interrupted", "last_success",
                           "stored_bytes", "protected"] for v in doc["vms"])
    assert list(doc["jobs"]) == ["interrupted", "failed", "succeeded"]
    assert all(list(v["last_backup"]) == JOB_KEYS for v in doc["vms"]) and list(doc["failures"][0]) == JOB_KEYS
    assert c.get("/report?hours=48").json()["jobs"] == {"interrupted": 1, "failed": 1, "succeeded": 3}


def test_usage_report_is_the_clis_document(client) -> None:
    """``GET /report/usage`` shows what ``cutpoint report --json`` shows, from the same computation."""
    c, svc, clock = client
    build_vault()[0].close()
    doc = c.get("/report/usage").json()
    assert doc == json.loads(cutpoint("report", "--json", check=True).out)
    assert shape(doc)[1:] == SHAPE[1:] and len(doc["vms"]) == 9 and len(doc["problems"]) == 1
