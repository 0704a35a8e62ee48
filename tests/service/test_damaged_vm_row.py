"""A VM row whose settings are damaged (not JSON, or JSON that is not an object) must not stop the other VMs'
scheduled backups: that VM is skipped with a failed job and an alert naming it and the damage, once, not on every
pass; the others are backed up on time."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from tests.service.fakes import harness, policy

UTC = timezone.utc


@pytest.mark.parametrize("damage, needle", [("{not json", "not valid JSON"), ("[1, 2]", "not an object")])
def test_a_damaged_vm_row_skips_that_vm_only(damage: str, needle: str, caplog: pytest.LogCaptureFixture) -> None:
    h = harness(datetime(2024, 6, 1, 12, tzinfo=UTC))
    p = policy({"frequency": "daily", "time": "03:00"})
    for vm in ("app", "db", "web"):
        h.add_vm(vm, p)
    h.svc.tick()
    h.vault.catalog.db.execute("UPDATE vms SET settings=? WHERE name='db'", (damage,))
    sent: list[dict] = []
    h.svc.alerter.send = sent.append                   # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        h.run_until(datetime(2024, 6, 3, 4, tzinfo=UTC), timedelta(minutes=10))
    ok = {(j.vm, j.slot[:10]) for j in h.svc.jobs.list(kind="backup", state="succeeded", limit=100)}
    assert ok == {(vm, d) for vm in ("app", "web") for d in ("2024-06-02", "2024-06-03")}
    failed = h.svc.jobs.list(vm="db", limit=100)
    assert len(failed) == 1 and failed[0].state == "failed" and failed[0].kind == "backup"   # once, not per pass
    assert "db" in failed[0].error and needle in failed[0].error and "damaged" in failed[0].error
    assert [a["job"]["vm"] for a in sent] == ["db"] and sent[0]["event"] == "job.failed"
    assert any("db" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
