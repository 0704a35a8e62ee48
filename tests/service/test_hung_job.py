"""A hung backup must not hold its VM forever: past the job timeout it is interrupted (unwinding through its normal
failure path: cut released, no point), recorded failed with a timeout error, alerted, and the VM's later slots run.
A job that does not even reach its next progress step is abandoned after a grace period, so the VM is free again."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from cutpoint.backup.run import BackupOptions
from cutpoint.vault.vault import Vault
from tests.service.fakes import FakeBackup, harness, policy

UTC = timezone.utc


@dataclass
class HangingBackup(FakeBackup):
    """The first call hangs (reading, still reporting progress: ``progress``; or stuck outright: ``stuck``)."""

    mode: str = "progress"
    released: list[bool] = field(default_factory=list)
    unstick: threading.Event = field(default_factory=threading.Event)

    def __call__(self, vault: Vault, vm: str, opts: BackupOptions):  # type: ignore[override]
        if len(self.calls) == 0:
            self.calls.append(self.clock.now())
            try:
                while not self.unstick.wait(0.01):
                    if self.mode == "progress" and opts.progress:
                        opts.progress("d", 0, 1)
                return super().__call__(vault, vm, opts)
            finally:
                self.released.append(True)            # the cut's release in the real backup's finally
        return super().__call__(vault, vm, opts)


def _settle(h, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not h.svc.runner.idle() and time.monotonic() < deadline:
        time.sleep(0.01)


def _run(mode: str):
    h = harness(datetime(2024, 6, 1, 2, 59, tzinfo=UTC), backup=lambda c, f: HangingBackup(c, f, mode=mode),
                inline=False, job_timeout=timedelta(hours=1), job_abandon=timedelta(minutes=5))
    sent: list[dict] = []
    h.svc.alerter.send = sent.append                   # type: ignore[method-assign]
    h.add_vm("web", policy({"frequency": "hourly", "every": 4}))
    h.svc.tick()
    h.clock.set(datetime(2024, 6, 1, 4, 0, 5, tzinfo=UTC))
    h.svc.tick()                                       # the 04:00 slot starts, and hangs
    time.sleep(0.1)
    hung = h.svc.jobs.list(kind="backup", limit=1)[0]
    assert hung.state == "running" and h.svc.runner.busy("web") == hung.id
    h.clock.set(datetime(2024, 6, 1, 4, 59, tzinfo=UTC))
    h.svc.tick()                                       # within the hour: left alone
    time.sleep(0.1)                                    # (a stop asked by that tick would land within 10 ms)
    assert h.svc.jobs.get(hung.id).state == "running" and not h.backup.released
    h.clock.set(datetime(2024, 6, 1, 8, 0, 30, tzinfo=UTC))
    h.svc.tick()                                       # past it (the 08:00 slot is owed, the VM is still held)
    return h, hung, sent


def test_a_hung_job_is_interrupted_failed_alerted_and_later_slots_run() -> None:
    h, hung, sent = _run("progress")
    _settle(h)
    job = h.svc.jobs.get(hung.id)
    assert job.state == "failed" and "timed out" in job.error and "1 h" in job.error, job
    assert h.backup.released == [True] and h.vault.catalog.points("web") == []   # unwound: no point
    # (an RPO breach may also be due by now: 08:00 is past 02:59 + 4 h + 1 h; it is not what this test is about)
    assert [(a["event"], a["job"]["id"], a["final"]) for a in sent if a["event"] == "job.failed"] == \
        [("job.failed", hung.id, True)]
    h.svc.tick()                                       # the owed 08:00 slot runs now
    _settle(h)
    h.clock.set(datetime(2024, 6, 1, 12, 0, 5, tzinfo=UTC))
    h.svc.tick()
    _settle(h)
    ok = [j.slot for j in h.svc.jobs.list(kind="backup", state="succeeded", limit=10)]
    assert ok == ["2024-06-01T12:00:00.000Z", "2024-06-01T08:00:00.000Z"] and len(h.points("web")) == 2


def test_a_job_stuck_without_progress_is_abandoned_and_frees_its_vm() -> None:
    h, hung, sent = _run("stuck")
    time.sleep(0.1)
    assert h.svc.jobs.get(hung.id).state == "running"   # asked to stop; still inside the grace period
    h.clock.set(datetime(2024, 6, 1, 8, 6, tzinfo=UTC))
    h.svc.tick()                                       # grace over: abandoned, the VM is free
    job = h.svc.jobs.get(hung.id)
    assert job.state == "failed" and "timed out" in job.error and "did not stop" in job.error, job
    assert h.svc.runner.busy("web") != hung.id
    assert [(a["event"], a["job"]["id"]) for a in sent if a["event"] == "job.failed"] == [("job.failed", hung.id)]
    h.svc.tick()
    _settle(h, 2)
    h.backup.unstick.set()                             # the stuck call finally returns: its result is not taken
    time.sleep(0.2)
    assert h.svc.jobs.get(hung.id).state == "failed"
    ok = [j.slot for j in h.svc.jobs.list(kind="backup", state="succeeded", limit=10)]
    assert ok == ["2024-06-01T08:00:00.000Z"]
    h.svc.runner.wait(5)
