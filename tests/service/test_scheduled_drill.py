"""Scheduled restore drills: a policy's ``drill: {after_backups: 2}`` drills the VM's newest point after every second
backup as a job of kind ``drill``. Here the point's guest never shows its console pattern (a paused bare QEMU), so
the real drill fails: the job fails and alerts, the verdict is on the point, and retention's "newest good" skips it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from cutpoint.policy.store import assign
from tests.helpers import cutpoint
from tests.service.fakes import harness, policy
from tests.vault.util import backup, open_vault, two_disk_vm

UTC = timezone.utc


def test_drill_after_every_second_backup_fails_alerts_and_is_not_newest_good(bare_qemu, tmp_path) -> None:
    two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    cutpoint("vm", "set", "v", "--drill-console", "never-printed", "--drill-timeout", "3", check=True)
    h = harness(datetime(2024, 6, 4, 12, tzinfo=UTC))
    sent: list[dict] = []
    h.svc.alerter.send = sent.append                   # type: ignore[method-assign]
    pol = policy({"frequency": "weekly", "days": ["mon"], "time": "03:00"}, drill={"after_backups": 2})
    h.svc.policies.put(pol)
    assign(h.vault.catalog, h.svc.policies, "v", pol.name)
    h.svc.tick()                                       # baseline: counting starts at p1
    assert h.svc.jobs.list(kind="drill", limit=10) == []
    p2 = backup()["point"]
    h.clock.advance(timedelta(minutes=1))
    h.svc.tick()
    jobs = h.svc.jobs.list(kind="drill", limit=10)
    assert [(j.vm, j.state, j.detail.get("point")) for j in jobs] == [("v", "failed", p2)], jobs
    assert "console did not show" in (jobs[0].error or "")
    alerts = [a for a in sent if a["event"] == "job.failed"]
    assert len(alerts) == 1 and alerts[0]["job"]["kind"] == "drill"
    h.clock.advance(timedelta(minutes=1))
    h.svc.tick()                                       # the same point is not drilled again
    assert len(h.svc.jobs.list(kind="drill", limit=10)) == 1

    v = open_vault()
    rec = v.catalog.drill(p2)
    assert rec is not None and rec.verdict == "failed" and v.catalog.drill(p1) is None
    assert all(f["verdict"] == "skipped" for f in rec.result["filesystems"])    # no filesystem on these disks
    v.close()
    pts = {p["point"]: p for p in json.loads(cutpoint("points", "v", "--json", check=True).out)}
    assert pts[p2]["drill"]["verdict"] == "failed" and pts[p1]["drill"] is None
    r = json.loads(cutpoint("prune", "v", "--keep-last", "1", "--dry-run", "--json", check=True).out)
    kept = {d["point"]: d["reasons"] for d in r["keep"]}
    assert kept == {p2: ["last 1"], p1: ["newest good"]}, r
