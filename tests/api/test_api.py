"""The REST API: token required everywhere but /health, every error is JSON with a reason, bad input is a 4xx and
never a 500, and the happy paths (policies, assignment, on-demand backup and restore jobs, points, report) work."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cutpoint.api import auth
from cutpoint.backup.run import BackupOptions
from cutpoint.api.app import create_app
from cutpoint.api.console import routes as console
from cutpoint.catalog.db import VmRecord
from cutpoint.service.clock import FakeClock
from cutpoint.service.daemon import Service
from cutpoint.vault.vault import Vault
from tests.service.fakes import FakeBackup

DAILY = {"name": "daily", "timezone": "Europe/Berlin", "schedule": {"frequency": "daily", "time": "02:00"},
         "retention": {"last": 3, "daily": 7}}


class Api:
    def __init__(self, client: TestClient, token: str, svc: Service, backup: FakeBackup) -> None:
        self.c, self.token, self.svc, self.backup = client, token, svc, backup
        self.h = {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, **kw):
        return self.c.request(method, path, headers={**self.h, **kw.pop("headers", {})}, **kw)

    def __getattr__(self, method: str):
        return lambda path, **kw: self.request(method.upper(), path, **kw)

    def wait_job(self, job: int, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            j = self.get(f"/jobs/{job}").json()
            if j["state"] != "running":
                return j
            time.sleep(0.02)
        raise AssertionError(f"job {job} still running")


@pytest.fixture
def api(tmp_path: Path):
    vault = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    clock = FakeClock(datetime(2024, 6, 1, 12, tzinfo=timezone.utc))
    fb = FakeBackup(clock)
    svc = Service(vault, clock=clock, backup_fn=fb)
    vault.catalog.add_vm(VmRecord("web", "qmp", "/nonexistent.sock", "2024-06-01T00:00:00Z", {}))
    token = auth.load_or_create(vault.root)
    with TestClient(create_app(svc, token, restore_root=tmp_path)) as client:     # restores go under tmp_path
        yield Api(client, token, svc, fb)
    svc.runner.wait(10)
    svc.close()


def _is_error(r, status: int, *needles: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["status"] == status and body["error"] and body["reason"], body
    for n in needles:
        assert n in body["reason"] or n == body.get("field"), body


def test_token_is_required_everywhere_but_health(api: Api) -> None:
    assert auth.token_path(api.svc.vaults.root).stat().st_mode & 0o777 == 0o600
    assert api.c.get("/health").json()["status"] == "ok"
    # the console's pages (/, /ui/...) check credentials themselves: tests/api/console/test_console.py
    paths = ({r.path for r in api.c.app.routes if not console.is_console(r.path)}
             | {"/openapi.json", "/docs", "/no/such/route"})
    methods = ("GET", "POST", "PUT", "DELETE")
    for path in sorted(paths - {"/health"}):
        concrete = path.replace("{name}", "web").replace("{point}", "latest").replace("{job_id}", "1")
        for m in methods:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": api.token},
                            {"Authorization": "Basic " + api.token}):
                r = api.c.request(m, concrete, headers=headers, json={})
                _is_error(r, 401, "cutpoint serve --show-token")
                assert r.headers["www-authenticate"] == "Bearer"


def test_openapi_schema_is_served(api: Api) -> None:
    schema = api.get("/openapi.json").json()
    assert {"/vms", "/policies", "/jobs", "/report", "/vms/{name}/backup", "/vms/{name}/restore"} <= set(
        schema["paths"])
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


@pytest.mark.parametrize("method, path, body, status, needle", [
    ("POST", "/policies", {"name": "x", "schedule": {"frequency": "hourly", "every": 5}}, 422, "schedule.every"),
    ("POST", "/policies", {"name": "x", "schedule": {"frequency": "daily", "time": "7pm"}}, 422, "schedule.time"),
    ("POST", "/policies", {"name": "x", "timezone": "Nowhere/Land", "schedule": {"frequency": "daily",
                                                                                 "time": "01:00"}}, 422, "timezone"),
    ("POST", "/policies", {"name": "x", "schedule": {"frequency": "daily", "time": "01:00"},
                           "retention": {"last": 0}}, 422, "retention"),
    ("POST", "/policies", [1, 2, 3], 422, "dictionary"),
    ("POST", "/policies", "daily", 422, "dictionary"),
    ("POST", "/policies", {**DAILY}, 400, "already exists"),
    ("PUT", "/policies/other", {**DAILY}, 400, "path names 'other'"),
    ("GET", "/policies/nosuch", None, 404, "unknown policy 'nosuch'"),
    ("GET", "/policies/daily?count=-1", None, 422, "count"),
    ("DELETE", "/policies/used", None, 400, "assigned to web"),
    ("GET", "/vms/nosuch", None, 404, "unknown VM 'nosuch'"),
    ("GET", "/vms/nosuch/points", None, 404, "unknown VM"),
    ("GET", "/points?vm=nosuch", None, 404, "unknown VM"),
    ("GET", "/vms/web/points/nosuch", None, 404, "no restore point"),
    ("PUT", "/vms/web/policy", {"policy": "nosuch"}, 404, "unknown policy"),
    ("PUT", "/vms/web/policy", {"policy": 5}, 422, "policy"),
    ("PUT", "/vms/web/policy", {}, 422, "policy"),
    ("PUT", "/vms/nosuch/policy", {"policy": "daily"}, 404, "unknown VM"),
    ("POST", "/vms/nosuch/backup", None, 404, "unknown VM"),
    ("POST", "/vms/web/backup", {"full": "maybe"}, 422, "full"),
    ("POST", "/vms/web/backup", {"fulll": True}, 422, "fulll"),
    ("POST", "/vms/web/restore", {"point": "latest"}, 422, "to"),
    ("POST", "/vms/web/restore", {"point": "latest", "to": "/tmp/x", "format": "vmdk"}, 422, "format"),
    ("POST", "/vms/web/restore", {"point": "nosuch", "to": "/tmp/x"}, 404, "no restore point"),
    ("POST", "/vms/web/restore", {"point": "latest", "to": "relative/dir"}, 400, "absolute"),
    ("GET", "/jobs?limit=0", None, 422, "limit"),
    ("GET", "/jobs?limit=lots", None, 422, "limit"),
    ("GET", "/jobs?state=sleeping", None, 422, "state"),
    ("GET", "/jobs/99999", None, 404, "no job 99999"),
    ("GET", "/jobs/abc", None, 422, "job_id"),
    ("GET", "/jobs/99999999999999999999", None, 422, "job_id"),
    ("GET", "/jobs?kind=bogus", None, 422, "kind"),
    ("GET", "/report?hours=0", None, 422, "hours"),
    ("PATCH", "/vms/web", None, 405, "Method Not Allowed"),
    ("GET", "/nope", None, 404, "Not Found"),
])
def test_bad_input_is_a_4xx_with_a_reason(api: Api, method: str, path: str, body, status: int,
                                          needle: str) -> None:
    assert api.post("/policies", json=DAILY).status_code == 201
    api.post("/policies", json={**DAILY, "name": "used"})
    api.put("/vms/web/policy", json={"policy": "used"})
    api.backup(api.svc.vaults.get(), "web", BackupOptions())          # one point: 'latest' exists
    r = api.request(method, path, json=body) if body is not None else api.request(method, path)
    _is_error(r, status, needle)


def test_malformed_bodies_never_give_a_500(api: Api) -> None:
    junk = [b"", b"{", b"null", b"[]", b"42", b'{"name": null}', b'{"schedule": {"frequency": []}}',
            b'{"name": "x", "schedule": {"frequency": "daily", "time": 230}}', "{\"name\": \"\u00e9\"}".encode(),
            b'{"name": "x", "schedule": {"frequency": "weekly", "time": "01:00", "days": [null, {}]}}',
            b'{"name": "x", "schedule": {"frequency": "hourly", "every": true}}', b"\xff\xfe"]
    routes = [("POST", "/policies"), ("PUT", "/policies/x"), ("PUT", "/vms/web/policy"), ("POST", "/vms/web/backup"),
              ("POST", "/vms/web/restore")]
    for method, path in routes:
        for body in junk:
            r = api.request(method, path, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code < 500, (method, path, body, r.status_code, r.text)
            if path.endswith("/backup") and body in (b"", b"null"):
                continue                  # no body is a valid request: back up now, incrementally
            assert 400 <= r.status_code < 500 and r.json()["reason"], (method, path, body, r.status_code)


def test_policies_assignment_backup_restore_and_report(api: Api, tmp_path: Path) -> None:
    r = api.post("/policies", json=DAILY)
    assert r.status_code == 201 and r.json()["retention"]["daily"] == 7
    assert api.put("/policies/weekly", json={"schedule": {"frequency": "weekly", "days": ["sun"],
                                                          "time": "03:00"}}).status_code == 201
    assert api.put("/policies/weekly", json={"schedule": {"frequency": "weekly", "days": ["sat"],
                                                          "time": "03:00"}}).status_code == 200
    assert [p["name"] for p in api.get("/policies").json()] == ["daily", "weekly"]
    vm = api.put("/vms/web/policy", json={"policy": "daily"}).json()
    assert vm["policy"] == "daily" and vm["next_run"] == "2024-06-02T00:00:00.000Z"    # 02:00 CEST
    shown = api.get("/policies/daily?count=2").json()
    assert shown["vms"] == ["web"] and shown["next_runs"] == ["2024-06-02T00:00:00.000Z", "2024-06-03T00:00:00.000Z"]
    assert api.delete("/policies/weekly").status_code == 204

    r = api.post("/vms/web/backup")
    assert r.status_code == 202
    job = api.wait_job(r.json()["job"])
    assert job["state"] == "succeeded" and job["trigger"] == "api" and job["kind"] == "backup"
    pts = api.get("/vms/web/points").json()
    assert [p["id"] for p in pts] == [job["point"]] and api.get("/points").json() == pts
    assert api.get(f"/vms/web/points/{job['point'][:10]}").json()["id"] == job["point"]

    r = api.post("/vms/web/restore", json={"point": "latest", "to": str(tmp_path / "out")})
    assert r.status_code == 202 and r.json()["point"] == job["point"]
    restored = api.wait_job(r.json()["job"])
    assert restored["state"] == "succeeded" and restored["kind"] == "restore", restored   # a diskless point

    rep = api.get("/report").json()
    web = rep["vms"][0]
    assert web["name"] == "web" and web["policy"] == "daily" and web["backups_ok"] == 1 and web["protected"]
    assert rep["jobs"] == {"succeeded": 2}
    assert [j["id"] for j in api.get("/jobs?vm=web&kind=backup").json()] == [job["id"]]
    assert api.put("/vms/web/policy", json={"policy": None}).json()["next_run"] is None


def test_a_second_job_on_a_busy_vm_is_a_409(api: Api) -> None:
    release = threading.Event()
    inner = api.backup

    def slow(vault, vm, opts):
        release.wait(10)
        return inner(vault, vm, opts)
    api.svc.scheduler.backup_fn = slow
    first = api.post("/vms/web/backup").json()["job"]
    _is_error(api.post("/vms/web/backup"), 409, f"already has job {first}")
    _is_error(api.post("/vms/web/restore", json={"point": "x", "to": "/tmp/x"}), 404, "no restore point")
    release.set()
    assert api.wait_job(first)["state"] == "succeeded"


def test_soft_deleted_points_are_listed_with_deleted_true(api: Api) -> None:
    from cutpoint.vault import protection
    from cutpoint.vault.delete import delete_point
    from tests.helpers import commit_synthetic_point

    vault = api.svc.vaults.get()
    protection.change(vault, None, 14)                  # 'vault protect --soft-delete-days 14'
    rec = commit_synthetic_point(vault, "20240601T110000Z-abcd", "web", "2024-06-01T11:00:00Z",
                                 {"d": [os.urandom(vault.chunk_size)]})
    assert [p["id"] for p in api.get("/points").json()] == [rec.id] and api.get("/points?deleted=true").json() == []
    delete_point(vault, rec.id)
    assert api.get("/points").json() == []
    [d] = api.get("/points?deleted=true&vm=web").json()
    assert d["point"] == rec.id and d["vm"] == "web" and d["deleted"] and d["expires"] and d["problem"] is None
