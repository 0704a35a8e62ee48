"""JSON shapes of VMs, points and the report, shared by the API and the CLI so both say the same thing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..catalog.db import PointRecord, VmRecord
from ..errors import NotFoundError
from ..jobs.store import iso
from ..service.daemon import Service


def point_json(p: PointRecord) -> dict[str, Any]:
    return {"id": p.id, "vm": p.vm, "created": p.created, "consistency": p.consistency, "mode": p.mode,
            "pause_ms": p.pause_ms, "logical_bytes": p.logical_bytes, "read_bytes": p.read_bytes,
            "stored_bytes": p.stored_bytes}


def vm_json(svc: Service, vm: VmRecord) -> dict[str, Any]:
    pts = svc.vaults.get().catalog.points(vm.name)
    pname = vm.settings.get("policy")
    next_run = None
    if pname:
        try:
            next_run = svc.scheduler.next_run(vm.name, svc.policies.get(pname))
        except NotFoundError:
            pass
    last = svc.jobs.list(vm=vm.name, kind="backup", limit=1)
    return {"name": vm.name, "kind": vm.kind, "address": vm.address, "added": vm.added, "policy": pname,
            "points": len(pts), "last_point": pts[-1].id if pts else None,
            "last_backup": last[0].to_json() if last else None,
            "next_run": iso(next_run) if next_run else None}


def report(svc: Service, hours: int = 24) -> dict[str, Any]:
    """What a user asks the service every morning: is every VM protected, what failed, what is it using."""
    now = svc.clock.now()
    since = iso(now - timedelta(hours=hours))
    vault = svc.vaults.get()
    rows = []
    for vm in vault.catalog.vms():
        v = vm_json(svc, vm)
        jobs = svc.jobs.list(vm=vm.name, since=since, limit=10000)
        ok = [j for j in jobs if j.kind == "backup" and j.state == "succeeded"]
        pts = vault.catalog.points(vm.name)
        v.update({
            "backups_ok": len(ok),
            "jobs_failed": sum(1 for j in jobs if j.state == "failed"),
            "jobs_interrupted": sum(1 for j in jobs if j.state == "interrupted"),
            "last_success": ok[0].ended if ok else _last_point_time(pts),
            "stored_bytes": sum(p.stored_bytes for p in pts),
            "protected": bool(v["policy"]) and bool(pts),
            "rpo_breach": svc.rpo.open_breach(vm.name) if v["policy"] else None,
        })
        rows.append(v)
    jobs = svc.jobs.list(since=since, limit=100000)
    states: dict[str, int] = {}
    for j in jobs:
        states[j.state] = states.get(j.state, 0) + 1
    return {"generated": iso(now), "window_hours": hours, "service_running": svc.running, "vms": rows,
            "jobs": states, "failures": [j.to_json() for j in jobs if j.state == "failed"][:50]}


def _last_point_time(pts: list[PointRecord]) -> str | None:
    return pts[-1].created if pts else None
