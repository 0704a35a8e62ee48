"""A service driven by a fake clock, with a fake backup that commits real (diskless) points at the clock's time.

The points are real catalog rows and manifests, so the vault's own prune decides and deletes them: what a test checks
is what the service would keep on a real vault. Only the cut and read are faked, which is what lets a year of
schedules run in well under a second.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cutpoint.backup.result import BackupResult
from cutpoint.backup.run import BackupOptions, iso, new_point_id
from cutpoint.catalog.db import VmRecord
from cutpoint.errors import HypervisorError
from cutpoint.policy.model import Policy
from cutpoint.policy.store import assign
from cutpoint.service.clock import FakeClock
from cutpoint.service.daemon import Service
from cutpoint.service.scheduler import RetryPolicy
from cutpoint.vault.manifest import FORMAT, FORMAT_DELTA, Manifest
from cutpoint.vault.vault import Vault


@dataclass
class FakeBackup:
    clock: FakeClock
    fail: Callable[[datetime], bool] = lambda t: False
    calls: list[datetime] = field(default_factory=list)
    consistency: list[str | None] = field(default_factory=list)

    def __call__(self, vault: Vault, vm: str, opts: BackupOptions) -> BackupResult:
        now = self.clock.now()
        self.calls.append(now)
        self.consistency.append(opts.consistency)
        if self.fail(now):
            raise HypervisorError(f"QMP socket of {vm} refuses connections (injected)")
        if opts.progress:
            opts.progress("d", 1, 1)
        m = Manifest(point=new_point_id(now), vm=vm, created=iso(now), chunk_size=vault.chunk_size, disks=[],
                     format=FORMAT_DELTA if vault.packed else FORMAT, fanout=vault.fanout)
        res = BackupResult(point=m.point, vm=vm, created=m.created, consistency="crash", requested="crash",
                           fallback_reason=None, pause_ms=0.0, frozen_ms=None, mode="full", full_reason="first backup",
                           parent=None, duration_s=0.0)
        vault.commit_point(m, res.to_json())
        return res


@dataclass
class Harness:
    svc: Service
    clock: FakeClock
    backup: FakeBackup
    vault: Vault

    def add_vm(self, name: str, policy: Policy | None) -> None:
        self.vault.catalog.add_vm(VmRecord(name, "qmp", f"/nonexistent/{name}.sock", iso(self.clock.now()), {}))
        if policy is not None:
            self.svc.policies.put(policy, replace=True)
            assign(self.vault.catalog, self.svc.policies, name, policy.name)

    def run_until(self, end: datetime, step: timedelta = timedelta(minutes=1)) -> None:
        """Advance the clock in ``step``s, one scheduling pass per step (a daemon ticking every ``step``)."""
        while self.clock.now() < end:
            self.clock.advance(step)
            self.svc.tick()

    def local_times(self, tz: str) -> list[str]:
        from zoneinfo import ZoneInfo
        return [t.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z") for t in self.backup.calls]

    def points(self, vm: str) -> list[str]:
        return [p.created for p in self.vault.catalog.points(vm)]


def harness(start: datetime, *, fail: Callable[[datetime], bool] = lambda t: False,
            retry: RetryPolicy = RetryPolicy(), backup: Any = None, **service: Any) -> Harness:
    """``backup``: a callable like ``FakeBackup`` given the clock (default ``FakeBackup``); ``service``: more
    ``Service`` options."""
    vault = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    clock = FakeClock(start)
    fb = (backup or FakeBackup)(clock, fail)
    svc = Service(vault, clock=clock, inline=service.pop("inline", True), backup_fn=fb, retry=retry, **service)
    svc.recover()
    return Harness(svc, clock, fb, vault)


def policy(schedule: dict[str, Any], retention: dict[str, int] | None = None, tz: str = "UTC",
           name: str = "p", **extra: Any) -> Policy:
    return Policy.from_dict({"name": name, "timezone": tz, "schedule": schedule,
                             "retention": retention or {"last": 1000}, **extra})
