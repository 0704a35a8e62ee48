"""Garbage collection: mark every chunk a visible point references, sweep the rest that is old enough.

Safe while backups run (the argument is in docs/format.md §15). In short, a chunk is deleted only if

* no point visible when gc reads the catalog references it, and
* its mtime is older than the *cutoff*: min(gc's start, the start of the oldest running backup) minus a grace.

A running backup's new chunks are younger than its own start; a chunk it deduplicates against was touched when it
found it (``ChunkStore.put``), under the directory lock gc holds while it sweeps that directory; a chunk it inherits
unread from its parent point is referenced by that parent, which cannot be pruned while the backup holds the VM's
lock. Starts and mtimes come from one clock, the filesystem's; the grace covers clock steps. The same age rule
removes manifests without a catalog row (a backup killed before its commit point, a prune killed after its) and
``.tmp-*`` leftovers of killed writers. A soft-deleted point is a root like a visible one until its soft delete
expires; then gc purges it (docs/format.md §19).
"""

from __future__ import annotations

import os
import stat
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import faults
from ..catalog.db import PointRecord
from ..errors import IntegrityError, NotFoundError, VaultError
from . import location, locks, packgc, packindex, protection, remote, softdelete
from .backend import delete_unless_retained
from .chunks import BAD_SUFFIX, ChunkStore, is_chunk_name
from .packstore import PackStore
from .prune import parse_created
from .tree import ChunkTree
from .locks import DEFAULT_GRACE
from .vault import Vault


@dataclass
class GcResult:
    dry_run: bool
    cutoff: str
    grace_s: float
    running_backups: list[str] = field(default_factory=list)
    points: int = 0                     # visible points (soft-deleted ones: ``soft_deleted``)
    referenced_chunks: int = 0
    chunks_seen: int = 0
    removed_chunks: int = 0
    kept_young: int = 0
    removed_manifests: int = 0
    removed_temp: int = 0
    removed_bad: int = 0
    freed_bytes: int = 0
    packs_seen: int = 0                 # format v4
    packs_removed: int = 0
    packs_repacked: int = 0
    packs_written: int = 0
    repacked_bytes: int = 0
    kept_relied: int = 0                # packs a running backup relies on
    kept_retained: int = 0              # S3 Object Lock: packs the store keeps until their retain-until date
    packs_adopted: int = 0              # packs whose index object was lost, taken back into the index (packgc)
    retention_extended: int = 0         # S3 Object Lock: objects whose retention gc extended
    immutable_days: int = 0             # the vault's protection (docs/format.md §19)
    soft_delete_days: int = 0
    soft_deleted: list[str] = field(default_factory=list)     # soft-deleted points whose data is kept (roots)
    purged: list[str] = field(default_factory=list)           # expired soft-deleted points removed
    kept_immutable: list[str] = field(default_factory=list)   # expired, but younger than the immutability
    removed_records: int = 0            # stale deletion records of visible points
    kept_retained_records: list[str] = field(default_factory=list)   # expired, kept: Object Lock keeps the record

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def gc(vault: Vault, *, dry_run: bool = False, grace: float = DEFAULT_GRACE) -> GcResult:
    if not dry_run:             # a swapped or rolled-back vault: what is "unreferenced" there is not ours to judge
        vault.require_trusted("gc")
    with vault.gc_lock(), vault.points_lock(shared=True):
        start = _fs_now(vault.locks_dir / "gc.lock")
        writers = locks.running_writers(vault.locks_dir)
        cutoff = min([start] + [w.start for w in writers]) - grace
        res = GcResult(dry_run, datetime.fromtimestamp(cutoff, timezone.utc).isoformat(timespec="seconds"), grace,
                       [w.what for w in writers])
        if vault.remote is not None:
            sync = remote.sync_catalog(vault)   # S3: mark from the bucket's manifests as they are under the lock
            if sync.unreadable:
                raise VaultError(f"gc stopped before deleting anything: {sync.unreadable[0]}; a point whose manifest "
                                 "cannot be read now may be whole, and gc would free its data. Run gc again once "
                                 "the store answers")
        roots, expired = _roots(vault, res)
        if isinstance(vault.chunks, PackStore):
            _gc_packs(vault, vault.chunks, roots, expired, cutoff, res)
            return res
        referenced: set[str] = set()
        for rec, at in roots:
            try:
                referenced |= vault.manifest(rec, at=at).referenced()
            except IntegrityError as exc:
                raise IntegrityError(f"gc stopped before deleting anything: {exc}; without it gc cannot tell which "
                                     f"chunks point {rec.id} uses. Run 'cutpoint verify', then prune that "
                                     "point") from exc
        res.points, res.referenced_chunks = len(roots) - len(res.soft_deleted), len(referenced)
        _purge(vault, expired, res)
        _sweep_manifests(vault, {str(at.relative_to(vault.root)) for _, at in roots}, cutoff, res)
        assert isinstance(vault.chunks, ChunkStore)
        for d in vault.chunks.directories():
            with vault.chunks.dir_lock(d, exclusive=True):
                _sweep_dir(d, referenced, cutoff, res)
    return res


def _roots(vault: Vault, res: GcResult) -> tuple[list[tuple[PointRecord, Path]], list[softdelete.DeletedPoint]]:
    """The points whose data gc keeps, each with where its manifest is: every visible point, and every soft-deleted
    one not yet expired (or expired but still immutable); and the expired ones, which ``_purge`` removes after the
    mark and before anything is swept, so that no point still listed as recoverable ever loses a chunk."""
    prot, now = protection.current(vault), protection.now()
    res.immutable_days, res.soft_delete_days = prot.immutable_days, prot.soft_delete_days
    roots = [(rec, vault.root / rec.manifest) for rec in vault.catalog.points()]
    expired = []
    for dp in softdelete.scan(vault, prot):
        if dp.expired(now) and dp.row is not None and not _immutable(prot, dp.row, now):
            if not softdelete.retained(vault, dp):
                expired.append(dp)
                continue
            res.kept_retained_records.append(dp.id)     # whole, until the store lets its record go
        elif dp.expired(now):
            res.kept_immutable.append(dp.id)
        if dp.manifest is None:
            continue                    # nothing left to keep (its record is listed with the problem)
        if dp.row is None:
            raise IntegrityError(f"gc stopped before deleting anything: soft-deleted point {dp.id}: {dp.problem}; "
                                 "without it gc cannot read which chunks the point uses. Restore the record from "
                                 "a copy, or remove it and its manifest to give the point up")
        res.soft_deleted.append(dp.id)
        roots.append((dp.row, dp.manifest))
    return roots, expired


def _purge(vault: Vault, expired: list[softdelete.DeletedPoint], res: GcResult) -> list[softdelete.DeletedPoint]:
    """After the mark: expired soft-deleted points go (record, then manifest), and stale deletion records. Returns
    the points that stayed, listed: the store refused their records' deletes after all."""
    stayed = []
    for dp in expired:
        gone, freed = softdelete.purge(vault, dp, res.dry_run)
        (res.purged if gone else res.kept_retained_records).append(dp.id)
        if not gone:
            stayed.append(dp)
        res.freed_bytes += freed
    for path in softdelete.stale_records(vault):
        if softdelete.drop_stale(vault, path, res.dry_run):
            res.removed_records += 1
    return stayed


def _immutable(prot: protection.Protection, row: PointRecord, now: datetime) -> bool:
    try:
        return prot.is_immutable(parse_created(row.created), now)
    except (TypeError, ValueError):
        return prot.immutable_days > 0          # age unknown: kept while the vault is immutable


def _gc_packs(vault: Vault, store: PackStore, roots: list[tuple[PointRecord, Path]],
              expired: list[softdelete.DeletedPoint], cutoff: float, res: GcResult) -> None:
    seen: set[bytes] = set()
    marked = {at for _, at in roots}

    def mark(points: list[tuple[PointRecord, Path]], before: str = "anything") -> set[bytes]:
        trees: list[ChunkTree] = []
        try:
            for rec, at in points:
                trees += [d.chunks for d in vault.manifest(rec, at=at).disks if isinstance(d.chunks, ChunkTree)]
            return packgc.referenced(trees, seen)
        except (IntegrityError, NotFoundError) as exc:
            raise IntegrityError(f"gc stopped before deleting {before}: {exc}; without it gc cannot tell which "
                                 "chunks the points use. Run 'cutpoint vault rebuild-index' (an index object may "
                                 "be lost: the packs list their own blobs), then 'cutpoint verify', and prune the "
                                 "point it still names") from exc

    def late() -> set[bytes]:
        """The points committed since the mark (asked under the packs lock): a backup that deduplicated against
        an old pack of dead blobs and ended meanwhile took its registration with it (§18.7)."""
        return mark([(rec, at) for rec in vault.catalog.points() if (at := vault.root / rec.manifest) not in marked],
                    "any pack")

    live = mark(roots)
    res.points, res.referenced_chunks = len(roots) - len(res.soft_deleted), len(live)
    if not res.dry_run:
        vault.check_lock()          # S3: its lock lost, another host may hold the vault: nothing is deleted
    stayed = _purge(vault, expired, res)
    if stayed:      # a hold or retention set on their records since _roots asked: still listed, so kept whole
        kept = [(dp.row, dp.manifest) for dp in stayed if dp.row is not None and dp.manifest is not None]
        live |= mark(kept, "any pack")
        roots = roots + kept
    _sweep_manifests(vault, {str(at.relative_to(vault.root)) for _, at in roots}, cutoff, res)
    _sweep_object_temps(vault, cutoff, res)
    st, counts = packgc.sweep(store, live, cutoff, res.dry_run, late, vault.check_lock)
    retention = location.retention_of(vault.config) if vault.remote is not None else None
    if retention is not None and not res.dry_run:
        st.retention_extended = packgc.extend_retention(store, live, res.immutable_days) \
            + remote.extend_meta_retention(vault, res.immutable_days)
    for k, v in {**asdict(st), **counts}.items():
        setattr(res, k, getattr(res, k) + v)


def _fs_now(path: Path) -> float:
    """The filesystem's clock now, the one chunk mtimes are stamped with."""
    os.utime(path)
    return os.stat(path).st_mtime


def _remove(path: Path, size: int, res: GcResult) -> bool:
    if res.dry_run:
        res.freed_bytes += size
        return True
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    res.freed_bytes += size
    return True


def _sweep_manifests(vault: Vault, known: set[str], cutoff: float, res: GcResult) -> None:
    """Manifests that are neither a visible point's nor a kept soft-deleted point's, in ``points/`` and
    ``deleted/``, and ``.tmp-*`` leftovers; deletion records are never swept here (``_roots``)."""
    if vault.remote is not None:    # S3: every manifest in points/ is a point (another host's too): none is swept
        _sweep_orphan_copies(vault, cutoff, res)
        return
    for top in (vault.root / "points", vault.root / softdelete.DELETED):
        if top.exists():
            _sweep_manifests_in(vault, top, known, cutoff, res)


def _sweep_orphan_copies(vault: Vault, cutoff: float, res: GcResult) -> None:
    """S3: manifest copies in ``deleted/`` without their record (a purge or an undelete killed, or refused by Object
    Lock, between the record and the copy): no listing names them, so without this they would stay for good. A
    delete writes every record before any copy, so a copy without a record is never one being made."""
    objs = list(vault.backend.list(f"{softdelete.DELETED}/"))
    records = {o.name[:-len(softdelete.RECORD_SUFFIX)] for o in objs if o.name.endswith(softdelete.RECORD_SUFFIX)}
    for o in objs:
        if not o.name.endswith(".manifest") or o.name[:-len(".manifest")] in records or o.mtime >= cutoff:
            continue
        if not delete_unless_retained(vault.backend, o.name, res.dry_run):
            continue                    # a later gc, once the store lets it go
        res.removed_manifests += 1
        res.freed_bytes += o.size


def _sweep_object_temps(vault: Vault, cutoff: float, res: GcResult) -> None:
    """``.tmp-*`` leftovers of packs, index objects and bad-blob markers whose writer was killed before the rename.
    No listing shows them (names starting with '.' are hidden), so nothing else would ever remove them."""
    if vault.remote is not None:
        return          # S3: an object appears whole or not at all
    for top in ("data", packindex.INDEX_PREFIX.rstrip("/"), packindex.BAD_PREFIX.rstrip("/")):
        d = vault.root / top
        if not d.is_dir():
            continue
        for path in d.rglob(".tmp-*"):
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff and _remove(path, st.st_size, res):
                res.removed_temp += 1


def _sweep_manifests_in(vault: Vault, root: Path, known: set[str], cutoff: float, res: GcResult) -> None:
    for path in root.rglob("*"):
        if not path.is_file() or str(path.relative_to(vault.root)) in known:
            continue
        if not (path.name.startswith(".tmp-") or path.name.endswith(".manifest")):
            continue
        st = path.stat()
        if st.st_mtime < cutoff and _remove(path, st.st_size, res):
            if path.name.startswith(".tmp-"):
                res.removed_temp += 1
            else:
                res.removed_manifests += 1


def _sweep_dir(d: Path, referenced: set[str], cutoff: float, res: GcResult) -> None:
    with os.scandir(d) as it:
        entries = list(it)
    for e in entries:
        try:
            st = e.stat()
        except FileNotFoundError:
            continue
        name, path = e.name, Path(e.path)
        if name.startswith(".tmp-"):
            if st.st_mtime < cutoff and _remove(path, st.st_size, res):
                res.removed_temp += 1
        elif name.endswith(BAD_SUFFIX):
            cid = name[:-len(BAD_SUFFIX)]
            if (cid not in referenced or (d / cid).exists()) and st.st_mtime < cutoff \
                    and _remove(path, st.st_size, res):
                res.removed_bad += 1
        elif is_chunk_name(name):
            res.chunks_seen += 1
            if name in referenced:
                continue
            if st.st_mtime >= cutoff:
                res.kept_young += 1
            elif _remove(path, st.st_size, res):
                res.removed_chunks += 1
                faults.hit("gc-sweep")
