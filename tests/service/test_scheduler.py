"""The daemon's scheduling, driven by a fake clock: the right backups at the right times across day, week, month
and year boundaries and DST, one catch-up after downtime, retries with backoff, and retention keeping exactly the
expected points (through the vault's own prune)."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from cutpoint.errors import LockedError
from cutpoint.service.scheduler import RetryPolicy
from tests.service.fakes import harness, policy

UTC = timezone.utc
MIN = timedelta(minutes=1)


def _dates(h, vm: str, tz: str = "Europe/Berlin") -> list[str]:
    from zoneinfo import ZoneInfo
    return [datetime.fromisoformat(c.replace("Z", "+00:00")).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")
            for c in h.points(vm)]


def test_daily_runs_at_its_local_time_across_dst() -> None:
    h = harness(datetime(2024, 3, 29, 12, tzinfo=UTC))
    h.add_vm("web", policy({"frequency": "daily", "time": "02:30"}, tz="Europe/Berlin"))
    h.svc.tick()
    assert h.backup.calls == []                        # assigning a policy does not back up at once
    h.run_until(datetime(2024, 4, 2, 12, tzinfo=UTC), MIN)
    h.clock.set(datetime(2024, 10, 25, 12, tzinfo=UTC))
    h.svc.tick()                                       # a long gap: one catch-up (checked elsewhere)
    h.backup.calls.clear()
    h.run_until(datetime(2024, 10, 29, 12, tzinfo=UTC), MIN)
    assert h.local_times("Europe/Berlin") == ["2024-10-26 02:30 CEST", "2024-10-27 02:30 CEST",
                                              "2024-10-28 02:30 CET", "2024-10-29 02:30 CET"]
    spring = [j for j in reversed(h.svc.jobs.list(kind="backup", limit=100)) if j.slot < "2024-05"]
    assert [j.slot for j in spring] == ["2024-03-30T01:30:00.000Z", "2024-03-31T01:30:00.000Z",  # 03:30 CEST
                                        "2024-04-01T00:30:00.000Z", "2024-04-02T00:30:00.000Z"]
    assert all(j.trigger == "schedule" and j.state == "succeeded" for j in spring)


def test_hourly_window_weekly_days_and_boundaries() -> None:
    h = harness(datetime(2024, 12, 30, 0, tzinfo=UTC))
    h.add_vm("db", policy({"frequency": "hourly", "every": 4, "window_start": "08:00", "window_hours": 12},
                          tz="UTC", name="hourly"))
    h.add_vm("web", policy({"frequency": "weekly", "days": ["tue", "fri"], "time": "23:15"}, tz="Europe/Berlin",
                           name="weekly", consistency="app"))
    h.svc.tick()
    h.run_until(datetime(2025, 1, 4, 0, tzinfo=UTC), 5 * MIN)
    db = [j.slot for j in reversed(h.svc.jobs.list(vm="db", kind="backup", limit=100))]
    assert db == [f"{d}T{hh}:00:00.000Z" for d in ("2024-12-30", "2024-12-31", "2025-01-01", "2025-01-02",
                                                    "2025-01-03") for hh in ("08", "12", "16")]
    web = [j.slot for j in reversed(h.svc.jobs.list(vm="web", kind="backup", limit=100))]
    assert web == ["2024-12-31T22:15:00.000Z", "2025-01-03T22:15:00.000Z"]   # Tue 31 Dec, Fri 3 Jan (local)
    # the policy's consistency reaches the backup; a policy without one leaves it to the VM's setting
    assert h.backup.consistency.count("app") == 2 and h.backup.consistency.count(None) == 15
    # every backup ran within one tick of its slot
    for j in h.svc.jobs.list(kind="backup", limit=100):
        assert timedelta(0) <= datetime.fromisoformat(j.started.replace("Z", "+00:00")) - \
            datetime.fromisoformat(j.slot.replace("Z", "+00:00")) <= 5 * MIN


def test_downtime_gets_one_catch_up_not_a_burst() -> None:
    h = harness(datetime(2024, 6, 1, 12, tzinfo=UTC))
    h.add_vm("web", policy({"frequency": "hourly", "every": 6}, tz="UTC"))
    h.svc.tick()
    h.run_until(datetime(2024, 6, 2, 1, tzinfo=UTC), 10 * MIN)       # 18:00, 00:00
    assert len(h.backup.calls) == 2
    h.clock.set(datetime(2024, 6, 5, 3, tzinfo=UTC))                  # the daemon was down for 3 days
    for _ in range(5):
        h.svc.tick()
    assert len(h.backup.calls) == 3
    job = h.svc.jobs.list(kind="backup", limit=1)[0]
    assert job.trigger == "catch-up" and job.slot == "2024-06-05T00:00:00.000Z"
    assert job.detail["skipped_slots"] == 11             # 06:00 on the 2nd ... 18:00 on the 4th
    h.run_until(datetime(2024, 6, 5, 13, tzinfo=UTC), 10 * MIN)      # then back on schedule
    assert [j.slot[11:16] for j in h.svc.jobs.list(kind="backup", limit=2)] == ["12:00", "06:00"]
    assert h.svc.jobs.list(kind="backup", limit=1)[0].trigger == "schedule"


def test_restart_catches_up_from_the_catalog_and_reaps_dead_jobs() -> None:
    start = datetime(2024, 6, 1, 12, tzinfo=UTC)
    h = harness(start)
    h.add_vm("web", policy({"frequency": "daily", "time": "03:00"}, tz="UTC"))
    h.svc.tick()
    h.run_until(datetime(2024, 6, 2, 4, tzinfo=UTC), 10 * MIN)
    assert len(h.backup.calls) == 1
    # a job a killed daemon left running (its pid is gone)
    dead = h.svc.jobs.start("backup", "web", "schedule", h.clock.now())
    h.svc.jobs.db.execute("UPDATE jobs SET pid=? WHERE id=?", (2 ** 22 + 7, dead))
    h.svc.close()
    h2 = harness(datetime(2024, 6, 4, 9, tzinfo=UTC))                # a new daemon process, days later
    assert h2.svc.jobs.get(dead).state == "interrupted"
    h2.svc.tick()
    h2.svc.tick()
    assert len(h2.backup.calls) == 1
    job = h2.svc.jobs.list(kind="backup", limit=1)[0]
    assert job.trigger == "catch-up" and job.slot == "2024-06-04T03:00:00.000Z" and job.detail["skipped_slots"] == 1


class _Hook(BaseHTTPRequestHandler):
    got: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        self.got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a) -> None:
        pass


@pytest.fixture
def webhook():
    srv = HTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.got = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/alert", _Hook.got
    srv.shutdown()


def test_failures_retry_with_backoff_then_give_up_with_alerts(webhook) -> None:
    url, got = webhook
    down = [(datetime(2024, 6, 2, 3, tzinfo=UTC), datetime(2024, 6, 2, 3, 2, 30, tzinfo=UTC)),
            (datetime(2024, 6, 3, 3, tzinfo=UTC), datetime(2024, 6, 3, 23, tzinfo=UTC))]
    h = harness(datetime(2024, 6, 1, 12, tzinfo=UTC), retry=RetryPolicy(attempts=3, backoff=60),
                fail=lambda t: any(a <= t < b for a, b in down))
    h.svc.alerter.webhook = url
    h.add_vm("web", policy({"frequency": "daily", "time": "03:00"}, tz="UTC"))
    h.svc.tick()
    h.run_until(datetime(2024, 6, 4, 4, tzinfo=UTC), timedelta(seconds=10))
    h.svc.alerter.flush()
    jobs = list(reversed(h.svc.jobs.list(kind="backup", limit=100)))
    summary = [(j.slot[5:10], j.attempt, j.trigger, j.state, j.started[11:19]) for j in jobs]
    assert summary == [
        ("06-02", 1, "schedule", "failed", "03:00:00"),
        ("06-02", 2, "retry", "failed", "03:01:00"),       # +60 s
        ("06-02", 3, "retry", "succeeded", "03:03:00"),    # +120 s: the VM is back
        ("06-03", 1, "schedule", "failed", "03:00:00"),
        ("06-03", 2, "retry", "failed", "03:01:00"),
        ("06-03", 3, "retry", "failed", "03:03:00"),       # given up
        ("06-04", 1, "schedule", "succeeded", "03:00:00"),
    ]
    assert "injected" in jobs[0].error
    failed = [a for a in got if a["event"] == "job.failed"]
    assert [(a["final"], a["job"]["attempt"]) for a in failed] == [(False, 1), (False, 2), (False, 1), (False, 2),
                                                                    (True, 3)]
    assert all(a["job"]["vm"] == "web" for a in failed)
    # no success since 2 Jun 03:03 by 3 Jun 04:03 (a day plus the default hour of grace), met again on the 4th
    assert [(a["event"], a["vm"]) for a in got if a["event"] != "job.failed"] == [("rpo.breach", "web"),
                                                                                   ("rpo.recovered", "web")]


def test_retention_keeps_exactly_the_expected_points_across_a_year_boundary() -> None:
    # 00:30 in Berlin is 23:30 UTC the day before: buckets must follow the policy's days, not UTC's
    h = harness(datetime(2024, 11, 20, 12, tzinfo=UTC))
    h.add_vm("web", policy({"frequency": "daily", "time": "00:30"},
                           {"last": 2, "daily": 3, "weekly": 2, "monthly": 2, "yearly": 2}, tz="Europe/Berlin"))
    h.svc.tick()
    h.run_until(datetime(2025, 1, 8, 12, tzinfo=UTC), 10 * MIN)
    assert len(h.backup.calls) == 49
    # daily: 6, 7, 8 Jan; weekly: W02 (8 Jan), W01 (Sun 5 Jan); monthly/yearly: 8 Jan and 31 Dec
    assert _dates(h, "web") == ["2024-12-31 00:30", "2025-01-05 00:30", "2025-01-06 00:30", "2025-01-07 00:30",
                                "2025-01-08 00:30"]
    prunes = h.svc.jobs.list(kind="prune", limit=1000)
    assert len(prunes) == 49 and all(j.state == "succeeded" for j in prunes)
    assert sum(len(j.detail["removed"]) for j in prunes) == 44


def test_retention_across_dst_keeps_local_days() -> None:
    h = harness(datetime(2024, 10, 20, 12, tzinfo=UTC))
    h.add_vm("web", policy({"frequency": "hourly", "every": 6}, {"last": 3, "daily": 4}, tz="Europe/Berlin"))
    h.svc.tick()
    h.run_until(datetime(2024, 10, 28, 12, tzinfo=UTC), 10 * MIN)
    # last 3: the 28th at 12:00, 06:00, 00:00; daily 4: the newest of each of the 4 newest *local* days (in UTC
    # days, 00:00 Berlin would be the newest of the day before and 18:00 would go)
    assert _dates(h, "web") == ["2024-10-25 18:00", "2024-10-26 18:00", "2024-10-27 18:00", "2024-10-28 00:00",
                                "2024-10-28 06:00", "2024-10-28 12:00"]
    fall_back_day = [j.slot for j in h.svc.jobs.list(kind="backup", limit=100) if j.slot.startswith("2024-10-27")]
    assert sorted(fall_back_day) == ["2024-10-27T05:00:00.000Z", "2024-10-27T11:00:00.000Z",
                                     "2024-10-27T17:00:00.000Z", "2024-10-27T23:00:00.000Z"]  # 06, 12, 18, 00 local


def test_policy_change_rebaselines_and_unassigned_vms_are_not_scheduled() -> None:
    h = harness(datetime(2024, 6, 1, 12, tzinfo=UTC))
    h.add_vm("idle", None)
    h.add_vm("web", policy({"frequency": "daily", "time": "03:00"}, tz="UTC"))
    h.svc.tick()
    h.run_until(datetime(2024, 6, 2, 12, tzinfo=UTC), 10 * MIN)
    assert len(h.backup.calls) == 1
    h.svc.policies.put(policy({"frequency": "daily", "time": "13:00"}, tz="UTC"), replace=True)
    h.run_until(datetime(2024, 6, 3, 14, tzinfo=UTC), 10 * MIN)
    # the 12:00 tick saw the new schedule and baselined: the first new run is 13:00 on the 2nd
    assert [j.slot for j in h.svc.jobs.list(kind="backup", limit=5)][::-1] == [
        "2024-06-02T03:00:00.000Z", "2024-06-02T13:00:00.000Z", "2024-06-03T13:00:00.000Z"]
    assert h.svc.jobs.list(vm="idle") == []


def test_one_job_per_vm_at_a_time() -> None:
    from cutpoint.service.runner import Outcome
    h = harness(datetime(2024, 6, 1, 12, tzinfo=UTC))
    h.svc.runner.inline = False
    h.add_vm("web", None)
    release = threading.Event()

    def slow(ctx):
        release.wait(10)
        return Outcome()
    first = h.svc.runner.submit("backup", "web", slow, trigger="api")
    with pytest.raises(LockedError, match=f"already has job {first}"):
        h.svc.runner.submit("restore", "web", slow, trigger="api")
    other = h.svc.runner.submit("backup", "db", lambda ctx: Outcome(), trigger="api")  # another VM: fine
    release.set()
    assert h.svc.runner.wait(10)
    assert {h.svc.jobs.get(first).state, h.svc.jobs.get(other).state} == {"succeeded"}
    assert h.svc.runner.submit("restore", "web", lambda ctx: Outcome(), trigger="api") > other
    assert h.svc.runner.wait(10)


def test_unassigned_then_reassigned_owes_nothing() -> None:
    """Days without a policy are not downtime: reassigning the policy does not trigger a catch-up backup."""
    from cutpoint.policy.store import assign

    h = harness(datetime(2024, 6, 1, 12, tzinfo=UTC))
    h.add_vm("web", policy({"frequency": "daily", "time": "03:00"}, tz="UTC"))
    h.svc.tick()
    h.run_until(datetime(2024, 6, 2, 12, tzinfo=UTC), 10 * MIN)
    assert len(h.backup.calls) == 1
    assign(h.vault.catalog, h.svc.policies, "web", None)
    h.run_until(datetime(2024, 6, 5, 12, tzinfo=UTC), 10 * MIN)
    assert len(h.backup.calls) == 1                             # not scheduled while unassigned
    assign(h.vault.catalog, h.svc.policies, "web", "p")
    h.run_until(datetime(2024, 6, 6, 2, tzinfo=UTC), 10 * MIN)
    assert len(h.backup.calls) == 1                             # no catch-up for the unassigned days
    h.run_until(datetime(2024, 6, 6, 4, tzinfo=UTC), 10 * MIN)
    assert h.backup.calls[1:] == [datetime(2024, 6, 6, 3, tzinfo=UTC)]
