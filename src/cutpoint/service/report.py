"""The two reports, computed here so that the CLI and the API show the same numbers.

* ``usage(vault)``: what the vault holds per VM, and what it is billed as (``cutpoint report``, ``GET
  /report/usage``). Needs only the vault.
* ``status(svc, hours)``: what the service did in a window, per registered VM (``GET /report``). Needs the service's
  job history and schedule.

They stay two types because they answer two questions over two sets of VMs: usage lists every VM with points,
removed ones included, and calls a VM *protected* when it is registered; status lists the registered VMs and calls
one protected when it has a policy and a point. Both documents are contracts other tools read, key order included.

Usage. A protected instance counts 0.5 when its backups are crash-consistent and 1.0 when they are
application-consistent (the weight follows the configured type, the one scheduled backups ask for: the VM's
policy's, else the VM's own, else crash; that is what the user asks to be protected as). Bytes:

* ``logical``: the sum of the disk sizes of all its points (what restoring every point would write);
* ``stored``: the on-disk size of the distinct chunks its points reference (compressed, as stored);
* ``unique``: the part of ``stored`` no other VM references, i.e. what removing the VM and its points would free.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from typing import Any

from ..catalog.db import VmRecord
from ..errors import CutpointError, NotFoundError
from ..jobs.store import Job, iso
from ..policy.store import PolicyStore
from ..vault.vault import Vault
from .daemon import Service

WEIGHTS = {"crash": 0.5, "app": 1.0}


# -- usage ---------------------------------------------------------------------------------------------------------

@dataclass
class VmUsage:
    vm: str
    protected: bool                       # registered (a removed VM's points still count)
    consistency: str                      # the configured type
    weight: float
    points: int
    last_point_consistency: str | None    # what the newest readable point got
    logical_bytes: int
    stored_bytes: int
    unique_bytes: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class UsageReport:
    vms: list[VmUsage]
    vault_stored_bytes: int
    problems: list[str]                   # points whose manifest could not be read; counted without their bytes

    @property
    def total_weight(self) -> float:
        return sum(v.weight for v in self.vms)

    def to_json(self) -> dict[str, Any]:
        return {"vms": [v.to_json() for v in self.vms], "total_weight": self.total_weight,
                "vault_stored_bytes": self.vault_stored_bytes, "problems": self.problems}


def usage(vault: Vault) -> UsageReport:
    refs: dict[str, set[str]] = {}
    logical: dict[str, int] = defaultdict(int)
    problems: list[str] = []
    last: dict[str, str] = {}
    for rec in vault.catalog.points():
        refs.setdefault(rec.vm, set())
        try:
            m = vault.manifest(rec)
        except CutpointError as exc:
            problems.append(f"point {rec.id} of VM {rec.vm}: {exc}")
            continue
        refs[rec.vm] |= m.referenced()
        logical[rec.vm] += sum(d.size for d in m.disks)
        last[rec.vm] = m.consistency
    owners: dict[str, int] = defaultdict(int)
    for ids in refs.values():
        for cid in ids:
            owners[cid] += 1
    size: dict[str, int] = {}
    for cid in owners:
        try:
            size[cid] = vault.chunks.stored_size(cid)     # missing: 0, verify's business
        except CutpointError:
            size[cid] = 0
    settings = {v.name: v.settings for v in vault.catalog.vms()}
    by_policy = _policy_consistency(vault)
    rows = []
    for name in sorted(set(settings) | set(refs)):
        own = settings.get(name) or {}
        ctype = by_policy.get(str(own.get("policy") or "")) or own.get("consistency") or "crash"
        ids = refs.get(name, set())
        rows.append(VmUsage(
            vm=name, protected=name in settings, consistency=ctype,
            weight=WEIGHTS.get(ctype, 0.5) if name in settings else 0.0,
            points=len(vault.catalog.points(name)), last_point_consistency=last.get(name),
            logical_bytes=logical.get(name, 0), stored_bytes=sum(size[c] for c in ids),
            unique_bytes=sum(size[c] for c in ids if owners[c] == 1)))
    return UsageReport(rows, sum(size.values()), problems)


def _policy_consistency(vault: Vault) -> dict[str, str | None]:
    store = PolicyStore(vault.catalog.path)
    try:
        return {p.name: p.consistency for p in store.all()}
    finally:
        store.close()


# -- drills --------------------------------------------------------------------------------------------------------

@dataclass
class DrillRow:
    vm: str
    point: str
    verdict: str
    checked: str
    rto_s: float | None
    reasons: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def drills(vault: Vault) -> list[DrillRow]:
    """Every point's last drill, per VM and point in time order (``cutpoint report --drills``, ``GET
    /report/drills``): which points proved they boot, how long the way back took, and which failed."""
    rows = []
    for p in vault.catalog.points():
        d = vault.catalog.drill(p.id)
        if d is None:
            continue
        rto = d.result.get("rto_s")
        reasons = d.result.get("reasons")
        rows.append(DrillRow(p.vm, p.id, d.verdict, d.checked, rto if isinstance(rto, (int, float)) else None,
                             [str(r) for r in reasons] if isinstance(reasons, list) else []))
    return rows


# -- status --------------------------------------------------------------------------------------------------------

@dataclass
class VmSummary:
    """A registered VM as the API shows it (``GET /vms``), and the first part of its status row."""
    name: str
    kind: str
    address: str
    added: str
    policy: str | None
    points: int
    last_point: str | None
    last_backup: Job | None
    next_run: str | None

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["last_backup"] = self.last_backup.to_json() if self.last_backup else None
        return d


def vm_summary(svc: Service, vm: VmRecord) -> VmSummary:
    pts = svc.vaults.get().catalog.points(vm.name)
    pname = vm.settings.get("policy")
    next_run = None
    if pname:
        try:
            next_run = svc.scheduler.next_run(vm.name, svc.policies.get(pname))
        except NotFoundError:
            pass
    last = svc.jobs.list(vm=vm.name, kind="backup", limit=1)
    return VmSummary(vm.name, vm.kind, vm.address, vm.added, pname, len(pts), pts[-1].id if pts else None,
                     last[0] if last else None, iso(next_run) if next_run else None)


@dataclass
class VmStatus:
    vm: VmSummary
    backups_ok: int                       # in the window
    jobs_failed: int
    jobs_interrupted: int
    last_success: str | None              # the newest successful backup in the window, else the newest point
    stored_bytes: int
    protected: bool                       # has a policy and a point

    def to_json(self) -> dict[str, Any]:
        return {**self.vm.to_json(), "backups_ok": self.backups_ok, "jobs_failed": self.jobs_failed,
                "jobs_interrupted": self.jobs_interrupted, "last_success": self.last_success,
                "stored_bytes": self.stored_bytes, "protected": self.protected}


@dataclass
class StatusReport:
    """What a user asks the service every morning: is every VM protected, what failed, what is it using."""
    generated: str
    window_hours: int
    service_running: bool
    vms: list[VmStatus]
    jobs: dict[str, int]                  # state -> how many of the window's jobs are in it
    failures: list[Job]                   # the newest 50 failed jobs in the window

    def to_json(self) -> dict[str, Any]:
        return {"generated": self.generated, "window_hours": self.window_hours,
                "service_running": self.service_running, "vms": [v.to_json() for v in self.vms], "jobs": self.jobs,
                "failures": [j.to_json() for j in self.failures]}


def status(svc: Service, hours: int = 24) -> StatusReport:
    now = svc.clock.now()
    since = iso(now - timedelta(hours=hours))
    vault = svc.vaults.get()
    rows = []
    for vm in vault.catalog.vms():
        summary = vm_summary(svc, vm)
        jobs = svc.jobs.list(vm=vm.name, since=since, limit=10000)
        ok = [j for j in jobs if j.kind == "backup" and j.state == "succeeded"]
        pts = vault.catalog.points(vm.name)
        rows.append(VmStatus(
            summary, backups_ok=len(ok),
            jobs_failed=sum(1 for j in jobs if j.state == "failed"),
            jobs_interrupted=sum(1 for j in jobs if j.state == "interrupted"),
            last_success=ok[0].ended if ok else (pts[-1].created if pts else None),
            stored_bytes=sum(p.stored_bytes for p in pts),
            protected=bool(summary.policy) and bool(pts)))
    jobs = svc.jobs.list(since=since, limit=100000)
    states: dict[str, int] = {}
    for j in jobs:
        states[j.state] = states.get(j.state, 0) + 1
    return StatusReport(iso(now), hours, svc.running, rows, states, [j for j in jobs if j.state == "failed"][:50])
