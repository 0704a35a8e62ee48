"""The guard's requests over the API and on the console's vault page (docs/format.md §21): both tokens see them; no
token can create, approve or deny one (that needs the guard key: the second principal); hostile request objects
are escaped on the page."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cutpoint.api import auth
from cutpoint.api.app import create_app
from cutpoint.service.clock import FakeClock
from cutpoint.service.daemon import Service
from cutpoint.vault.vault import Vault
from tests.api.console.helpers import login
from tests.helpers import cutpoint
from tests.service.fakes import FakeBackup
from tests.vault.util import protected_vault, vault_dir

HOSTILE = '<script>alert("x")</script>'


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Path, str]]:
    """A guarded vault with one pending request, served; yields the client, the tokens, the guard key, the id."""
    protected_vault(4, soft_delete_days=14)
    key = tmp_path / "guard.key"
    cutpoint("vault", "guard", "init", "--to", str(key), check=True)       # the guard first, then immutability
    cutpoint("vault", "protect", "--immutable-days", "7", check=True)
    r = cutpoint("vault", "protect", "--soft-delete-days", "1")
    assert r.code == 14, r.err
    m = re.search(r"request ([0-9a-f]{32})", r.err)
    assert m
    vault = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    svc = Service(vault, clock=FakeClock(datetime(2024, 6, 1, 12, tzinfo=timezone.utc)),
                  backup_fn=FakeBackup(FakeClock(datetime(2024, 6, 1, 12, tzinfo=timezone.utc))))
    tokens = auth.tokens(vault.root)
    with TestClient(create_app(svc, tokens, restore_root=tmp_path)) as client:
        yield client, tokens, key, m.group(1)
    svc.runner.wait(10)
    svc.close()


def test_both_tokens_list_requests_and_no_token_decides_one(guarded) -> None:
    client, tokens, key, rid = guarded
    for role in ("read-only", "operator"):
        h = {"Authorization": f"Bearer {tokens[role]}"}
        body = client.get("/approvals", headers=h).json()
        assert body["guard"]["algorithm"] == "ed25519"
        assert [(r["id"], r["state"], r["operation"]) for r in body["requests"]] == [(rid, "pending", "protect")]
        assert client.get("/approvals?state=approved", headers=h).json()["requests"] == []
        assert [e["event"] for e in client.get("/approvals/audit", headers=h).json()] == ["requested"]
        assert client.get("/approvals?state=bogus", headers=h).status_code == 422
    ro = {"Authorization": f"Bearer {tokens['read-only']}"}
    op = {"Authorization": f"Bearer {tokens['operator']}"}
    for path in ("/approvals", f"/approvals/{rid}", f"/approvals/{rid}/approve"):
        assert client.post(path, headers=ro, json={}).status_code == 403        # read-only: no change at all
        assert client.post(path, headers=op, json={}).status_code in (404, 405)  # operator: no such route
    assert client.get("/approvals").status_code == 401
    assert json.loads(cutpoint("approvals", "--json", check=True).out)[0]["state"] == "pending"
    cutpoint("approve", rid, "--guard-key", str(key), check=True)
    assert client.get("/approvals", headers=ro).json()["requests"][0]["state"] == "approved"


def test_the_console_vault_page_shows_requests_escaped_and_offers_no_decision(guarded) -> None:
    client, tokens, _, rid = guarded
    planted = "f" * 32
    good = json.loads((vault_dir() / "requests" / f"{rid}.json").read_text())
    (vault_dir() / "requests" / f"{planted}.json").write_text(json.dumps({**good, "id": planted,
                                                                          "operation": HOSTILE}))
    login(client, tokens["read-only"])
    page = client.get("/ui/vault").text
    assert "Approval requests (1 pending)" in page and rid in page and "soft_delete_days 14 -&gt; 1" in page
    assert "cutpoint approve REQUEST --guard-key FILE" in page
    assert planted in page and "invalid" in page and HOSTILE not in page and "&lt;script&gt;" in page
    assert "/approve" not in page and "/deny" not in page
    client.cookies.clear()
    login(client, tokens["operator"])
    page = client.get("/ui/vault").text
    assert rid in page and 'action="/ui/vault/approve' not in page
