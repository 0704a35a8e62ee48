"""The job functions the service and the API run: backup, restore, prune (retention) and gc.

Each is a thin adapter from a job context to the function that does the work, owned elsewhere: ``backup.run.backup``,
``restore.images.restore_point``, and the vault's ``prune``/``gc``. Retention decisions are the vault's pure
``retention.decide`` (restic's semantics), applied in the policy's time zone so that "daily" means the policy's days.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo
from pathlib import Path
from typing import Any

from ..backup.run import BackupOptions, backup
from ..policy.model import Policy
from ..restore.images import restore_point
from ..vault import gc as vault_gc
from ..vault import prune as vault_prune
from ..vault.retention import Retention
from ..vault.vault import Vault
from .runner import JobContext, JobFn, Outcome

BackupFn = Callable[[Vault, str, BackupOptions], dict[str, Any]]


def backup_job(vm: str, *, full: bool = False, policy: Policy | None = None,
               backup_fn: BackupFn | None = None) -> JobFn:
    """``backup_fn`` replaces the real backup in clock-driven tests (it defaults to ``backup.run.backup``)."""
    fn = backup_fn or backup

    def run(ctx: JobContext) -> Outcome:
        opts = BackupOptions(full=full, progress=ctx.progress,
                             consistency=policy.consistency if policy is not None else None)
        res = fn(ctx.vault, vm, opts)
        disks = res.get("disks", [])
        detail = {"mode": res.get("mode"), "full_reason": res.get("full_reason"),
                  "consistency": res.get("consistency"), "requested": res.get("requested"),
                  "fallback_reason": res.get("fallback_reason"), "pause_ms": res.get("pause_ms"),
                  "logical_bytes": sum(d["size"] for d in disks),
                  "read_bytes": sum(d["read_bytes"] for d in disks),
                  "stored_bytes": sum(d["stored_bytes"] for d in disks),
                  "warnings": res.get("warnings", [])}
        if policy is not None:
            detail["policy"] = policy.name
        return Outcome(bytes=detail["read_bytes"], point=res["point"], detail=detail)
    return run


def restore_job(vm: str, point: str, to: Path, fmt: str) -> JobFn:
    def run(ctx: JobContext) -> Outcome:
        rec = ctx.vault.catalog.point(vm, point)
        files = restore_point(ctx.vault, ctx.vault.manifest(rec), to, fmt, ctx.progress)
        return Outcome(bytes=sum(f.size for f in files), point=rec.id,
                       detail={"to": str(to), "format": fmt,
                               "files": [{"disk": f.disk, "path": str(f.path), "size": f.size} for f in files]})
    return run


def prune_job(vm: str, policy: Policy) -> JobFn:
    """Apply the policy's retention to one VM's points through the vault's prune (which owns deleting)."""
    def run(ctx: JobContext) -> Outcome:
        res = prune_vm(ctx.vault, vm, policy.retention, policy.tz)
        return Outcome(detail={"policy": policy.name, "removed": [d["point"] for d in res["remove"]],
                               "kept": [{"point": d["point"], "reasons": d["reasons"]} for d in res["keep"]]})
    return run


def prune_vm(vault: Vault, vm: str, r: Retention, tz: tzinfo) -> dict[str, Any]:
    """Prune ``vm`` by ``r`` with day/week/month/year buckets in ``tz``."""
    return vault_prune.prune(vault, vm, r, tz=tz).to_json()


def gc_job(grace: float | None = None) -> JobFn:
    def run(ctx: JobContext) -> Outcome:
        res = vault_gc.gc(ctx.vault) if grace is None else vault_gc.gc(ctx.vault, grace=grace)
        return Outcome(bytes=res.freed_bytes, detail=res.to_json())
    return run
