"""A read-only token (a dashboard, a monitoring probe) can read everything and change nothing: every mutating route
answers 403 with the API's JSON error body. The routes are taken from the app itself, so a new route cannot be
forgotten."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from cutpoint.api import auth
from cutpoint.api.app import create_app
from cutpoint.api.console import routes as console
from cutpoint.catalog.db import VmRecord
from cutpoint.service.clock import FakeClock
from cutpoint.service.daemon import Service
from cutpoint.vault.vault import Vault
from tests.helpers import cutpoint
from tests.service.fakes import FakeBackup

MUTATING = {"POST", "PUT", "DELETE", "PATCH"}


@pytest.fixture
def served():
    vault = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    clock = FakeClock(datetime(2024, 6, 1, 12, tzinfo=timezone.utc))
    svc = Service(vault, clock=clock, backup_fn=FakeBackup(clock))
    vault.catalog.add_vm(VmRecord("web", "qmp", "/nonexistent.sock", "2024-06-01T00:00:00Z", {}))
    tokens = auth.tokens(vault.root)
    with TestClient(create_app(svc, tokens)) as client:
        yield client, tokens, svc
    svc.runner.wait(10)
    svc.close()


def _concrete(path: str) -> str:
    return path.replace("{name}", "web").replace("{point}", "latest").replace("{job_id}", "1")


def test_read_only_token_gets_403_on_every_mutating_route(served) -> None:
    client, tokens, svc = served
    ro = {"Authorization": f"Bearer {tokens['read-only']}"}
    routes = [(m, r.path) for r in client.app.routes if isinstance(r, APIRoute) for m in r.methods]
    mutating = [(m, p) for m, p in routes if m in MUTATING]
    assert {("POST", "/vms/{name}/backup"), ("POST", "/policies"), ("PUT", "/vms/{name}/policy"),
            ("DELETE", "/policies/{name}")} <= set(mutating)
    for m, p in mutating:
        if p in ("/login", "/logout"):
            continue                    # the console's sign-in and sign-out change nothing a role guards
        r = client.request(m, _concrete(p), headers=ro, json={})
        assert r.status_code == 403, (m, p, r.status_code, r.text)
        if console.is_console(p):
            continue                    # the console answers its refusals as HTML pages (tests/api/console)
        body = r.json()
        assert body["error"] == "forbidden" and body["status"] == 403 and "read-only" in body["reason"], body
    assert svc.jobs.list() == [] and svc.policies.all() == []          # nothing happened
    for m, p in routes:
        if m == "GET":
            r = client.get(_concrete(p), headers=ro)
            assert r.status_code not in (401, 403), (p, r.status_code, r.text)
    assert client.get("/openapi.json", headers=ro).status_code == 200


def test_operator_token_still_mutates_and_tokens_differ(served) -> None:
    client, tokens, _ = served
    assert tokens["operator"] != tokens["read-only"]
    op = {"Authorization": f"Bearer {tokens['operator']}"}
    r = client.post("/policies", headers=op, json={"name": "d", "schedule": {"frequency": "daily", "time": "02:00"}})
    assert r.status_code == 201, r.text


def test_cli_prints_each_roles_token() -> None:
    op = cutpoint("serve", "--show-token", check=True).out.strip()
    ro = cutpoint("serve", "--show-token", "--role", "read-only", check=True).out.strip()
    assert ro != op and len(ro) >= 32
    assert cutpoint("serve", "--show-token", "--role", "read-only", check=True).out.strip() == ro
    assert cutpoint("serve", "--show-token", "--role", "operator", check=True).out.strip() == op
    ro2 = cutpoint("serve", "--rotate-token", "--role", "read-only", check=True).out.strip()
    assert ro2 != ro and cutpoint("serve", "--show-token", check=True).out.strip() == op
    r = cutpoint("serve", "--show-token", "--role", "admin")
    assert r.code == 2 and "--role" in r.err
