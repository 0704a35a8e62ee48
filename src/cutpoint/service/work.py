"""The job functions the service and the API run: backup, restore, prune (retention), verify, gc and drill.

Each is a thin adapter from a job context to the function that does the work, owned elsewhere: ``backup.run.backup``,
``restore.orchestrator.restore``, and the vault's ``prune``/``verify``/``gc``. Retention decisions are the vault's pure
``retention.decide`` (restic's semantics), applied in the policy's time zone so that "daily" means the policy's days.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo
from pathlib import Path
from typing import Any

from ..backup.result import BackupResult
from ..backup.run import BackupOptions, backup
from ..policy.model import CopyPolicy, Policy
from ..restore.orchestrator import restore
from ..restore.results import ImagesResult
from ..restore.targets import Images, Target
from ..vault import gc as vault_gc
from ..vault import prune as vault_prune
from ..vault import verify as vault_verify
from ..vault.retention import Retention
from ..vault.vault import Vault
from .runner import JobContext, JobFailed, JobFn, Outcome

BackupFn = Callable[[Vault, str, BackupOptions], BackupResult]


def backup_job(vm: str, *, full: bool = False, policy: Policy | None = None,
               backup_fn: BackupFn | None = None, consistency: str | None = None) -> JobFn:
    """``backup_fn`` replaces the real backup in clock-driven tests (it defaults to ``backup.run.backup``);
    ``consistency`` overrides the policy's type for this one backup (the console's "Back up now" choice)."""
    fn = backup_fn or backup

    def run(ctx: JobContext) -> Outcome:
        opts = BackupOptions(full=full, progress=ctx.progress,
                             consistency=consistency or (policy.consistency if policy is not None else None))
        res = fn(ctx.vault, vm, opts)
        detail: dict[str, Any] = {
            "mode": res.mode, "full_reason": res.full_reason, "consistency": res.consistency,
            "requested": res.requested, "fallback_reason": res.fallback_reason, "pause_ms": res.pause_ms,
            "logical_bytes": res.logical_bytes, "read_bytes": res.read_bytes, "stored_bytes": res.stored_bytes,
            "warnings": res.warnings}
        if policy is not None:
            detail["policy"] = policy.name
        return Outcome(bytes=res.read_bytes, point=res.point, detail=detail)
    return run


def restore_job(vm: str, point: str, to: Path, fmt: str, *, within: Path | None = None) -> JobFn:
    """Images of ``point`` into ``to`` through the restore orchestrator (its locks: no prune meanwhile); ``within``
    confines ``to`` to a directory (the API's restore root), checked again as the job starts."""
    def run(ctx: JobContext) -> Outcome:
        res = restore(ctx.vault, vm, point, Images(to, fmt, within=within), progress=ctx.progress)
        assert isinstance(res, ImagesResult)
        return Outcome(bytes=res.nbytes, point=res.point,
                       detail={"to": str(to), "format": fmt,
                               "files": [{"disk": f.disk, "path": str(f.path), "size": f.size} for f in res.files]})
    return run


def target_job(vm: str, point: str, target: Target) -> JobFn:
    """Any other restore target (a new VM, replace in place, instant) through the orchestrator, as the CLI's
    ``restore --new-vm/--replace/--instant`` (its checks and locks); the result's JSON is kept on the job."""
    def run(ctx: JobContext) -> Outcome:
        res = restore(ctx.vault, vm, point, target, progress=ctx.progress)
        return Outcome(bytes=res.nbytes, point=res.point,
                       detail={"target": type(target).__name__, "result": res.to_json()})
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


def verify_job(vm: str, *, read_data: bool, policy: str | None = None) -> JobFn:
    """``verify [--read-data]`` of one VM's points; damage fails the job with the report's essentials kept on it
    (failed points, damaged chunks), which the runner's failure alert carries."""
    def run(ctx: JobContext) -> Outcome:
        rep = vault_verify.verify(ctx.vault, vm, read_data=read_data)
        failed = [p.point for p in rep.points if p.state != "ok"]
        detail: dict[str, Any] = {
            "policy": policy, "read_data": read_data, "points": len(rep.points), "chunks": rep.chunks_checked,
            "failed_points": failed, "catalog_problems": rep.catalog_problems[:20],
            "damaged_chunks": [{"id": c.id, "problem": c.problem, "moved_aside": c.moved_aside}
                               for c in rep.damaged_chunks[:100]]}
        if not rep.ok:
            what = (f"{len(failed)} of {len(rep.points)} points failed ({', '.join(failed[:4])}"
                    f"{', ...' if len(failed) > 4 else ''})" if failed else "the catalog is damaged")
            raise JobFailed(f"verify of VM {vm}: {what}; restore from a point that verifies (the next backup of "
                            "the VM is full by itself)", detail)
        return Outcome(bytes=rep.bytes_read, detail=detail)
    return run


def drill_job(vm: str, point: str = "latest", *, console: str | None = None, timeout: float | None = None,
              lock_wait: float = 0.0) -> JobFn:
    """A restore drill of one point (``restore.orchestrator.drill``); a failed drill fails the job (so the runner's
    alert fires) with the verdict kept on it; the verdict is in the catalog either way."""
    def run(ctx: JobContext) -> Outcome:
        from ..restore.drill import options_for
        from ..restore.orchestrator import drill
        from ..workdir import private_dir
        opts = options_for(ctx.vault.catalog.vm(vm).settings, console=console, timeout=timeout,
                           evidence=private_dir("screens"))
        opts.lock_wait = lock_wait
        res = drill(ctx.vault, vm, point, opts)
        detail: dict[str, Any] = {"point": res.point, "verdict": res.verdict, "rto_s": res.rto_s,
                                  "reasons": res.reasons[:20]}
        if res.verdict != "passed":
            raise JobFailed(f"drill of point {res.point} of VM {vm} failed: {'; '.join(res.reasons[:4])}", detail)
        return Outcome(point=res.point, detail=detail)
    return run


def gc_job(grace: float | None = None) -> JobFn:
    def run(ctx: JobContext) -> Outcome:
        res = vault_gc.gc(ctx.vault) if grace is None else vault_gc.gc(ctx.vault, grace=grace)
        return Outcome(bytes=res.freed_bytes, detail=res.to_json())
    return run


def copy_job(vm: str, cp: CopyPolicy, policy: str) -> JobFn:
    """'cutpoint copy VM --from VAULT --to cp.to' (``vault/copy.py``): the VM's points the target lacks. The target
    is opened as the CLI opens it (passphrase from CUTPOINT_PASSPHRASE_FILE, endpoint from CUTPOINT_S3_ENDPOINT); a
    shutdown stops the copy at its next read, and the next one resumes it."""
    def run(ctx: JobContext) -> Outcome:
        from ..vault import copy as vault_copy
        from ..vault import location
        dst = Vault.open(location.resolve(cp.to), warn=False)
        try:
            res = vault_copy.copy(ctx.vault, dst, vm, rate=cp.limit_rate,
                                  progress=lambda name, done, total: ctx.progress(f"copy {name}", done, total))
        finally:
            dst.close()
        return Outcome(bytes=res.bytes, detail={"policy": policy, **res.to_json()})
    return run
