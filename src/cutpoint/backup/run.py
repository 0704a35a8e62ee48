"""One backup of one VM: discover, cut, read, commit, clean up.

The monitor is held only for discovery and the cut, and again for cleanup; reading happens over NBD while the guest
runs on and while other tools may use the monitor. Whatever happens, cleanup runs and a point becomes visible only
after everything it references is durable.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .. import faults, heap
from ..catalog.db import PointRecord
from ..cut.cleanup import workdir_for
from ..errors import CutpointError, UsageError
from ..cut.disks import Disk, Inventory
from ..cut.driver import CutHandle, DriverSession, ReadTarget
from ..drivers.registry import driver_for
from ..paths import work_home
from ..reader.export import ExportReader
from ..signals import critical
from ..vault.manifest import FORMAT, FORMAT_DELTA, DiskManifest, Manifest
from ..vault.packstore import PackStore
from ..vault.tree import ChunkTree
from ..vault.vault import Vault
from . import validation
from .consistency import Consistency, Timeouts, requested_type
from .chunker import WORKERS, Progress, read_disk
from .treechunker import read_disk_tree
from .result import BackupResult, DiskResult

log = logging.getLogger(__name__)


@dataclass
class BackupOptions:
    full: bool = False
    progress: Progress | None = None
    consistency: str | None = None         # 'app' | 'crash'; None: the VM's setting, else crash


@dataclass
class _Plan:
    disks: list[Disk]
    since: dict[str, str | None] = field(default_factory=dict)     # disk -> previous point to read changes from
    full_reasons: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)                  # recorded on the point as warnings


def new_point_id(now: datetime, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """A point id: the second, and 16 random bits drawn again while the id is ``taken`` (a point of another VM
    in the same second: a catalog lists an id once, and an S3 vault's hosts would all fail to list the second)."""
    while True:
        pid = now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)
        if pid not in taken:
            return pid


def iso(now: datetime) -> str:
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def backup(vault: Vault, vm_name: str, opts: BackupOptions | None = None) -> BackupResult:
    """Back up ``vm_name`` into ``vault``; the result's ``to_json()`` is the CLI's ``--json`` contract."""
    opts = opts or BackupOptions()
    vm = vault.catalog.vm(vm_name)
    if vm.settings.get("instant"):     # its disks still read from the vault: no point of a half-local VM
        raise UsageError(f"VM {vm_name!r} is being instant-restored; run 'cutpoint instant finish {vm_name}' "
                         "before backing it up")
    driver = driver_for(vm)
    cons = Consistency(requested_type(vm.settings, opts.consistency), vm.settings,
                       Timeouts.from_settings(vm.settings))
    vault.require_trusted(f"backup of VM {vm_name!r}")      # a swapped or rolled-back vault: before the cut
    with vault.vm_lock(vm_name):
        started = time.monotonic()
        now = datetime.now(timezone.utc)
        point_id = new_point_id(now, {p.id for p in vault.catalog.points()})
        prev = vault.catalog.points(vm_name)
        prev_manifest, unusable = vault.parent_for(prev[-1]) if prev else (None, None)   # None: failed verify
        handle: CutHandle | None = None
        success = False
        problems: list[str] = []
        try:
            with driver.session() as s:
                swept = s.sweep(work_home())
                if swept:
                    log.warning("removed leftovers of an interrupted backup: %s", ", ".join(swept))
                inv = validation.enforce(validation.check(s.inventory(), vm.settings, vm_name), vm_name)
                config = s.capture_config()
                plan = _plan(s, inv, vm_name, prev_manifest, opts, unusable, vault.chunk_size)
                cons.prepare(s)                                 # app: ping, pre-script (or fall back)
                with critical():                                # a cut that exists reaches the release below
                    handle = cons.cut(s, plan.disks, point_id, plan.since,
                                      workdir_for(work_home(), vm_name, point_id))
            with critical():                                    # a SIGTERM waits for the thaw
                cons.finish()                                   # thaw confirmed, post-script
            nodes_base = prev_manifest or _nodes_base(vault, prev)
            manifest = _read_all(vault, handle, vm_name, point_id, now, prev_manifest, nodes_base, opts)
            manifest.skipped = [{"name": k.name, "reason": k.reason} for k in inv.skipped]
            cons.record(manifest)
            manifest.warnings += [w for w in inv.warnings + plan.notes if w not in manifest.warnings]
            manifest.vm_config = config
            if plan.full_reasons:
                manifest.full_reason = _reason(plan.full_reasons, len(plan.disks))
            manifest.mode = "full" if plan.full_reasons else "incremental"
            manifest.parent = prev_manifest.point if prev_manifest and manifest.mode == "incremental" else None
            summary = _summary(manifest, plan, time.monotonic() - started)
            vault.commit_point(manifest, summary.to_json())
            success = True
        finally:
            with critical():                                    # on a failed cut, the monitor is free again
                cons.finish()
            if handle is not None:
                # cleanup is never cut short by a SIGTERM; one that comes after the commit does not undo success
                with critical(deliver=not success):
                    faults.hit("cleanup")
                    problems = driver.release(handle, success)
        if problems:
            summary.warnings = list(summary.warnings) + [f"cleanup: {p}" for p in problems]
        return summary


def _plan(s: DriverSession, inv: Inventory, vm: str, prev: Manifest | None, opts: BackupOptions,
          unusable: str | None = None, chunk_size: int | None = None) -> _Plan:
    if not inv.disks:
        skipped = ", ".join(f"{k.name} ({k.reason})" for k in inv.skipped) or "none"
        raise UsageError(f"VM {vm!r} has no disk to back up (skipped: {skipped})")
    plan = _Plan(inv.disks)
    prev_disks = {d.name: d for d in prev.disks} if prev else {}
    for d in inv.disks:
        reason = s.chain(d, prev.point if prev else None)
        old = prev_disks.get(d.name)
        if prev is None:
            reason = unusable or "first backup"
        elif opts.full:
            reason = "full backup requested (--full)"
        elif chunk_size is not None and prev.chunk_size != chunk_size:
            # its chunk list does not line up with this point's chunks: nothing of it can be reused
            reason = (f"previous point {prev.point} has chunks of {prev.chunk_size} bytes, the vault now "
                      f"{chunk_size}")
        elif old is None:
            reason = f"disk {d.name} is new since point {prev.point}"
        elif old.size != d.size:
            reason = f"disk {d.name} was resized from {old.size} to {d.size} bytes"
        elif old.filename and d.filename and old.filename != d.filename:
            reason = f"disk {d.name} was replaced ({old.filename} -> {d.filename})"
        if reason:
            plan.full_reasons[d.name] = reason
            plan.since[d.name] = None
        else:
            plan.since[d.name] = prev.point if prev else None
    if prev:
        gone = sorted(set(prev_disks) - {d.name for d in inv.disks} - {k.name for k in inv.skipped})
        if gone:
            plan.notes.append(f"disk(s) {', '.join(gone)} of point {prev.point} are no longer attached to the VM "
                              "(removed); this point does not have them")
    return plan


def _nodes_base(vault: Vault, points: list[PointRecord]) -> Manifest | None:
    """Without a parent (its verification failed, or it does not open), the newest earlier point that opens: a
    full backup writes its index nodes as deltas over that point's (format.md §18.5). Its data is still all read
    from the VM; what this buys is that a point whose index nodes were lost is healed by the next backup of the same
    content, which writes those very nodes again."""
    for rec in reversed(points[-8:-1]):
        m, _ = vault.parent_for(rec)
        if m is not None:
            return m
    return None


def _read_all(vault: Vault, handle: CutHandle, vm: str, point_id: str, now: datetime, prev: Manifest | None,
              nodes_base: Manifest | None, opts: BackupOptions) -> Manifest:
    """Every disk at once, each from its own NBD connection, through one pool of workers: a disk whose data does
    not compress is bound by the vault's device and one that does by the CPU, and read one after the other they
    leave the other resource idle (the engine case: 0.47 s of device-bound writes, then 1.4 s on the CPU). When
    one disk fails, the others stop at their next run; the first failure is what the backup reports."""
    prev_disks = {d.name: d for d in prev.disks} if prev else {}
    base_disks = {d.name: d for d in nodes_base.disks} if nodes_base else {}
    failed = threading.Event()
    first: list[BaseException] = []            # the failure that stopped the others, not a knock-on one
    lock = threading.Lock()

    def fail(e: BaseException) -> None:
        with lock:
            if not first and not isinstance(e, _Stopped):
                first.append(e)
        failed.set()

    def progress(name: str, done: int, total: int) -> None:
        if failed.is_set():
            raise _Stopped()
        if opts.progress is not None:
            try:
                opts.progress(name, done, total)
            except BaseException as e:         # at once: the others stop at their next run, not once this
                fail(e)                        # disk's own clean-up has finished
                raise

    def one(t: ReadTarget, pool: ThreadPoolExecutor) -> DiskManifest:
        try:
            return _read_disk(vault, handle, t, prev_disks, base_disks, progress, pool)
        except BaseException as e:
            fail(e)
            raise

    with heap.kept(), ThreadPoolExecutor(max_workers=WORKERS) as pool, \
            ThreadPoolExecutor(max_workers=max(1, len(handle.targets)), thread_name_prefix="disk") as per_disk:
        futures = []
        try:
            futures += [per_disk.submit(one, t, pool) for t in handle.targets]
            wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException as e:             # a signal in this thread: the disks stop too, then it goes on
            fail(e)
            raise
        if failed.is_set():
            wait(futures)
            raise first[0]
        disks = [f.result() for f in futures]
    return Manifest(point=point_id, vm=vm, created=iso(now), chunk_size=vault.chunk_size, disks=disks,
                    pause_ms=round(handle.pause_ms, 3), warnings=list(handle.warnings),
                    format=FORMAT_DELTA if vault.packed else FORMAT, fanout=vault.fanout)


class _Stopped(Exception):
    """Another disk of the same backup failed: this one stops at its next run (never reported itself)."""


def _read_disk(vault: Vault, handle: CutHandle, t: ReadTarget, prev_disks: dict[str, DiskManifest],
               base_disks: dict[str, DiskManifest], progress: Progress, pool: ThreadPoolExecutor) -> DiskManifest:
    d = t.disk
    prev_chunks = prev_disks[d.name].chunks if t.bitmap else None
    with ExportReader(handle.nbd_socket, t.export, t.bitmap) as r:
        if r.size() != d.size:
            raise CutpointError(f"export of disk {d.name} has size {r.size()}, expected {d.size}")
        if isinstance(vault.chunks, PackStore):
            assert prev_chunks is None or isinstance(prev_chunks, ChunkTree)
            based = base_disks.get(d.name)
            base = based.chunks if based is not None and isinstance(based.chunks, ChunkTree) else None
            tr = read_disk_tree(r, d.name, d.size, vault.chunk_size, vault.chunks, vault.fanout,
                                prev=prev_chunks, nodes_base=base, progress=progress, pool=pool)
            dm = DiskManifest(name=d.name, size=d.size, chunks=tr.tree, read_bytes=tr.read_bytes,
                              stored_bytes=tr.stored_bytes, dirty_bytes=tr.dirty_bytes,
                              tree=tr.tree.root.hex() if tr.tree.root else None,
                              tree_height=tr.tree.height, index_bytes=tr.index_bytes)
        else:
            res = read_disk(r, d.name, d.size, vault.chunk_size, vault.chunks,
                            prev_chunks=list(prev_chunks) if prev_chunks is not None else None,
                            progress=progress, pool=pool)
            dm = DiskManifest(name=d.name, size=d.size, chunks=res.chunks, read_bytes=res.read_bytes,
                              stored_bytes=res.stored_bytes, dirty_bytes=res.dirty_bytes)
    dm.node, dm.driver, dm.filename, dm.cache = d.address, d.driver, d.filename, d.cache
    return dm


def _reason(reasons: dict[str, str], ndisks: int) -> str:
    distinct = set(reasons.values())
    if len(distinct) == 1 and len(reasons) == ndisks:
        return distinct.pop()
    return "; ".join(f"{d}: {r}" for d, r in reasons.items())


def _summary(m: Manifest, plan: _Plan, seconds: float) -> BackupResult:
    return BackupResult(
        point=m.point, vm=m.vm, created=m.created,
        consistency=m.consistency, requested=m.requested, fallback_reason=m.fallback_reason,
        pause_ms=m.pause_ms, frozen_ms=m.frozen_ms,
        mode=m.mode, full_reason=m.full_reason, parent=m.parent,
        duration_s=round(seconds, 3), warnings=list(m.warnings), skipped=m.skipped,
        disks=[DiskResult(name=d.name, size=d.size, read_bytes=d.read_bytes, stored_bytes=d.stored_bytes,
                          dirty_bytes=d.dirty_bytes, mode="full" if d.name in plan.full_reasons else "incremental",
                          cache=d.cache) for d in m.disks],
    )
