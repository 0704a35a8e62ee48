"""Scheduled verify (as Proxmox Backup Server's verify jobs): a policy's ``verify`` schedule runs ``verify`` of each
of its VMs' points as a job of kind ``verify``; with a chunk of a real vault corrupted, the scheduled verify fails,
names the damaged chunk and the points, marks them failed in the catalog and alerts, once per slot (never retried:
damage does not heal by trying again)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cutpoint.policy.model import PolicyError
from cutpoint.policy.store import assign
from tests.service.fakes import harness, policy
from tests.vault.util import backup, change, chunk_of, flip_chunk, open_vault, two_disk_vm

UTC = timezone.utc
MIN = timedelta(minutes=1)


def test_scheduled_verify_fails_and_alerts_on_a_damaged_chunk(bare_qemu, tmp_path) -> None:
    vm, _ = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    change(vm, 0x21)
    p2 = backup()["point"]
    cid = chunk_of(p1, "da", 0)
    assert chunk_of(p2, "da", 0) == cid

    h = harness(datetime(2024, 6, 4, 12, tzinfo=UTC))         # a Tuesday; backups on Mondays only
    sent: list[dict] = []
    h.svc.alerter.send = sent.append                   # type: ignore[method-assign]
    pol = policy({"frequency": "weekly", "days": ["mon"], "time": "03:00"},
                 verify={"frequency": "daily", "time": "04:00"})
    h.svc.policies.put(pol)
    assign(h.vault.catalog, h.svc.policies, "v", pol.name)
    h.svc.tick()
    h.run_until(datetime(2024, 6, 5, 4, 5, tzinfo=UTC), MIN)
    jobs = h.svc.jobs.list(kind="verify", limit=10)
    assert [(j.vm, j.state, j.trigger, j.slot) for j in jobs] == [("v", "succeeded", "schedule",
                                                                   "2024-06-05T04:00:00.000Z")]
    assert jobs[0].detail["read_data"] is True and jobs[0].detail["points"] == 2 and jobs[0].bytes > 0
    assert sent == [] and h.backup.calls == []

    flip_chunk(cid)
    h.run_until(datetime(2024, 6, 6, 12, tzinfo=UTC), MIN)
    jobs = h.svc.jobs.list(kind="verify", limit=10)
    assert [(j.state, j.slot[:10]) for j in jobs] == [("failed", "2024-06-06"), ("succeeded", "2024-06-05")]
    failed = jobs[0]
    assert p1 in failed.error and p2 in failed.error and "2 of 2 points failed" in failed.error
    assert [c["id"] for c in failed.detail["damaged_chunks"]] == [cid]
    assert sorted(failed.detail["failed_points"]) == sorted([p1, p2])
    alerts = [a for a in sent if a["event"] == "job.failed"]
    assert len(alerts) == 1 and alerts[0]["final"] is True
    assert alerts[0]["job"]["kind"] == "verify" and alerts[0]["job"]["vm"] == "v"
    v = open_vault()
    assert v.catalog.verified(p1).state == "failed" and v.catalog.verified(p2).state == "failed"
    v.close()


def test_verify_schedule_is_validated_naming_the_field() -> None:
    with pytest.raises(PolicyError, match=r"verify\.frequency"):
        policy({"frequency": "daily", "time": "03:00"}, verify={"frequency": "monthly"})
    with pytest.raises(PolicyError, match=r"verify\.read_data"):
        policy({"frequency": "daily", "time": "03:00"}, verify={"frequency": "daily", "time": "04:00",
                                                                "read_data": "yes"})
    p = policy({"frequency": "daily", "time": "03:00"}, verify={"frequency": "weekly", "days": "sun", "time": "5:00",
                                                                "read_data": False})
    assert p.to_dict()["verify"] == {"frequency": "weekly", "time": "05:00", "days": ["sun"], "read_data": False}
    assert "verify" not in policy({"frequency": "daily", "time": "03:00"}).to_dict()
