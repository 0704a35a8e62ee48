"""Removing points (prune, delete) and bringing soft-deleted ones back (undelete): the write orders of
docs/format.md §19.

With ``soft_delete_days`` > 0 a removed point keeps its manifest, moved to ``deleted/<vm>/<point>.manifest``, beside
a record ``deleted/<vm>/<point>.deleted`` (the catalog row as it was, the last verdict, the time of deletion); gc
keeps everything such a manifest references until the soft delete expires, then purges it. The files are the truth:
the catalog indexes visible points only, so nothing there can disagree with them.

Delete: (1) records, durable; (2) the catalog rows go, in one transaction (the commit point); (3) manifests move to
``deleted/``. Undelete: (1) the manifest moves back; (2) the row comes back (the commit point); (3) the record goes.
Every state between two steps is one of two: *visible with a stale record* (row, record, manifest in ``points/``)
or *soft-deleted, manifest not yet moved* (record, no row, manifest in ``points/``). Readers, gc and a repeated
delete or undelete handle both, so a kill -9 anywhere loses no point. Every caller holds the points lock
exclusively, so gc (shared) never sees a step half done.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .. import faults, names
from ..catalog.db import PointRecord, VerifyRecord
from ..errors import IntegrityError, NotFoundError, UsageError, VaultError
from . import hoststate
from .backend import delete_unless_retained
from .fsutil import fsync_dir, write_atomic
from .manifest import manifest_path
from .protection import Protection
from .vault import Vault

class _HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=_HasId)

DELETED = "deleted"
RECORD_SUFFIX = ".deleted"
RECORD_FORMAT = "cutpoint-deleted-point"
MAX_RECORD = 1 << 20            # a record is a catalog row: a planted huge object is not read whole
_ROW_FIELDS = [f.name for f in fields(PointRecord) if f.name != "damaged"]


@dataclass
class DeletedPoint:
    """A soft-deleted point, as its record says. ``manifest``: where its manifest is now (``deleted/``, or
    ``points/`` after a kill between delete's steps 2 and 3), None if gone. ``problem``: why the record or the
    manifest is unusable (listed, kept as a gc root while its manifest exists, never undeleted)."""
    id: str
    vm: str
    deleted: datetime | None
    expires: datetime | None
    row: PointRecord | None
    verified: VerifyRecord | None
    record: Path
    manifest: Path | None
    problem: str | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires

    def to_json(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat(timespec="seconds").replace("+00:00", "Z") if t else None
        row = self.row
        return {"point": self.id, "vm": self.vm, "created": row.created if row else None,
                "deleted": iso(self.deleted), "expires": iso(self.expires),
                "logical_bytes": row.logical_bytes if row else None, "stored_bytes": row.stored_bytes if row else None,
                "consistency": row.consistency if row else None, "mode": row.mode if row else None,
                "problem": self.problem}


def record_path(root: Path, vm: str, point: str) -> Path:
    return root / DELETED / vm / f"{point}{RECORD_SUFFIX}"


def deleted_manifest(root: Path, vm: str, point: str) -> Path:
    return root / DELETED / vm / f"{point}.manifest"


def softly_deletable(vault: Vault, rec: PointRecord) -> bool:
    """A row whose names are safe paths and whose manifest is where it belongs; any other (damaged, planted) row is
    removed outright: nothing could bring it back as a restorable point."""
    return (rec.damaged is None and names.is_valid(rec.id) and names.is_valid(rec.vm)
            and rec.manifest == str(manifest_path(vault.root, rec.vm, rec.id).relative_to(vault.root)))


def remove(vault: Vault, vm: str, recs: list[PointRecord], protection: Protection, when: datetime) -> None:
    """Remove ``recs`` (all of VM ``vm``), softly if the vault keeps deleted points. The caller holds the points
    lock exclusively and the VM's lock, and has checked immutability and pins."""
    if not recs:
        return
    vault.check_lock()          # S3: a prune or delete whose lock was lost (another host may hold the vault) stops
    soft = [r for r in recs if protection.soft_delete_days > 0 and softly_deletable(vault, r)]
    soft_ids = {r.id for r in soft}
    if vault.remote is not None:
        _remove_remote(vault, vm, recs, soft_ids, when)
        return
    if soft:
        d = vault.root / DELETED / vm
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            for r in soft:
                write_atomic(record_path(vault.root, vm, r.id), _record(vault, r, when), sync_dir=False)
            fsync_dir(d)
            fsync_dir(d.parent)
        except OSError as exc:
            raise VaultError(f"cannot record the deletion in {d}: {exc.strerror or exc}; nothing was removed") \
                from exc
        faults.hit("delete-recorded")
    gone = [r.id for r in recs]
    vault.catalog.remove_points(gone)                                   # the commit point
    left = vault.catalog.points(vm)
    hoststate.forgotten(vault.root, vm, gone, left[-1].id if left else None)   # ours: not a rollback
    faults.hit("after-prune-commit")
    dirs: set[Path] = set()
    for r in recs:
        if not names.is_valid(r.id):
            continue                     # a planted row ('../x'): its row is gone, no path is built from it
        vault.pin_path(r.id).unlink(missing_ok=True)      # unpinned (checked under the exclusive lock)
        path = vault.root / "points" / vm / f"{r.id}.manifest"
        if r.manifest != str(path.relative_to(vault.root)):
            continue
        if r.id in soft_ids:
            os.replace(path, deleted_manifest(vault.root, vm, r.id))
            dirs.add(vault.root / DELETED / vm)
        else:
            path.unlink(missing_ok=True)
        dirs.add(path.parent)
    for d in dirs:
        fsync_dir(d)


def _remove_remote(vault: Vault, vm: str, recs: list[PointRecord], soft_ids: set[str], when: datetime) -> None:
    """An S3 vault, where a point is visible while its manifest object is in ``points/`` (§20.2): records first,
    then a copy of each manifest in ``deleted/``, then the ``points/`` manifests go (the commit point), then the
    rows. A kill before the commit leaves the point visible (its record stale, removed by gc with the copy); after
    it, the next open's catalog sync drops the rows."""
    b = vault.backend
    for r in recs:
        if r.id in soft_ids:
            b.put(_name(vault, record_path(vault.root, vm, r.id)), _record(vault, r, when))
    faults.hit("delete-recorded")
    for r in recs:
        if r.id in soft_ids:
            b.put(_name(vault, deleted_manifest(vault.root, vm, r.id)), b.get(r.manifest))
    b.sync()
    for r in recs:
        if names.is_valid(r.id) and names.is_valid(vm) and r.manifest == f"points/{vm}/{r.id}.manifest":
            b.delete(r.manifest)
    b.sync()
    gone = [r.id for r in recs]
    vault.catalog.remove_points(gone)
    left = vault.catalog.points(vm)
    hoststate.forgotten(vault.root, vm, gone, left[-1].id if left else None)   # ours: not a rollback
    faults.hit("after-prune-commit")
    for r in recs:
        if names.is_valid(r.id):
            vault.pin_path(r.id).unlink(missing_ok=True)


def _record(vault: Vault, r: PointRecord, when: datetime) -> bytes:
    v = vault.catalog.verified(r.id)
    doc = {"format": RECORD_FORMAT, "version": 1, "point": r.id, "vm": r.vm,
           "deleted": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
           "row": {k: getattr(r, k) for k in _ROW_FIELDS}, "verified": asdict(v) if v else None}
    return json.dumps(doc, indent=1).encode()


def _name(vault: Vault, path: Path) -> str:
    return str(path.relative_to(vault.root))


def _is_file(vault: Vault, path: Path) -> bool:
    return vault.backend.exists(_name(vault, path)) if vault.remote is not None else path.is_file()


def _read_bytes(vault: Vault, path: Path) -> bytes:
    if vault.remote is not None:
        try:
            return vault.backend.get(_name(vault, path), 0, MAX_RECORD)
        except NotFoundError as exc:
            raise FileNotFoundError(str(path)) from exc
    return path.read_bytes()


def _records(vault: Vault, vm: str | None, stored: dict[Path, float] | None = None) -> list[tuple[str, str, Path]]:
    """(VM, point, record path) of every well-named deletion record: names from a listing are checked first. On S3,
    ``stored`` gets each record's time as the store reports it (``_read`` says why)."""
    out = []
    if vault.remote is not None:
        for obj in vault.backend.list(f"{DELETED}/"):
            parts = obj.name.split("/")
            if len(parts) == 3 and parts[2].endswith(RECORD_SUFFIX):
                out.append((parts[1], parts[2][:-len(RECORD_SUFFIX)], vault.root / obj.name))
                if stored is not None:
                    stored[vault.root / obj.name] = obj.mtime
    else:
        top = vault.root / DELETED
        if not top.is_dir():
            return []
        for vdir in top.iterdir():
            if vdir.is_dir():
                out += [(vdir.name, r.name[:-len(RECORD_SUFFIX)], r) for r in vdir.glob(f"*{RECORD_SUFFIX}")]
    return sorted((v, p, r) for v, p, r in out
                  if names.is_valid(v) and names.is_valid(p) and (vm is None or v == vm))


def scan(vault: Vault, protection: Protection, vm: str | None = None) -> list[DeletedPoint]:
    """Every soft-deleted point of the vault (or of ``vm``), records of points that are visible again (stale: an
    undelete or a delete killed half-way) left out. Names from the listing are checked before they become paths."""
    visible = {p.id for p in vault.catalog.points()}
    stored: dict[Path, float] = {}
    return [_read(vault, v, pid, rpath, protection, stored.get(rpath))
            for v, pid, rpath in _records(vault, vm, stored) if pid not in visible]


def stale_records(vault: Vault) -> list[Path]:
    """Records of points that have a catalog row (a delete killed before its commit, an undelete after its)."""
    visible = {(p.vm, p.id) for p in vault.catalog.points()}
    return [rpath for v, pid, rpath in _records(vault, None) if (v, pid) in visible]


def drop_stale(vault: Vault, record: Path, dry_run: bool = False) -> bool:
    """gc: a stale record goes; on S3 with it the copy of the (visible) point's manifest in ``deleted/``. False when
    the store keeps them under Object Lock retention (written with it like every object): a stale record is listed
    nowhere, so it simply stays until a gc after its retain-until date. ``dry_run``: only whether they would go."""
    if vault.remote is None:
        if not dry_run:
            record.unlink(missing_ok=True)
        return True
    copy = record.with_name(record.name[:-len(RECORD_SUFFIX)] + ".manifest")
    return all([delete_unless_retained(vault.backend, _name(vault, path), dry_run) for path in (record, copy)])


def retained(vault: Vault, dp: DeletedPoint) -> bool:
    """Whether the store (S3 Object Lock) still keeps the point's record or manifest copy: written at the deletion
    with the vault's immutability, they can outlive its soft delete. gc keeps such a point whole until both can go:
    freeing its data while its record stays listed would let a later, longer soft delete bring back a point whose
    data is gone."""
    if vault.remote is None:
        return False
    return any(vault.backend.retained(_name(vault, path)) for path in (dp.record, dp.manifest)
               if path is not None and path.is_relative_to(vault.root / DELETED))


def _read(vault: Vault, vm: str, pid: str, rpath: Path, protection: Protection,
          stored: float | None = None) -> DeletedPoint:
    """The record, with its deletion time no earlier than ``stored``, the time the store gave the record's current
    version (S3). The record is not authenticated, and a bucket's writers can add versions even under Object Lock:
    a new version saying "deleted 20 days ago" (or an old record copied back) would shorten the point's soft delete.
    The store's own time of the version cannot be set by a writer, so such a version makes the point look deleted
    *later*, never earlier."""
    here = [p for p in (deleted_manifest(vault.root, vm, pid), manifest_path(vault.root, vm, pid))
            if _is_file(vault, p)]
    dp = DeletedPoint(pid, vm, None, None, None, None, rpath, here[0] if here else None)
    try:
        doc = json.loads(_read_bytes(vault, rpath))
        if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT or doc.get("point") != pid \
                or doc.get("vm") != vm:
            raise ValueError("not the record of this point")
        t = datetime.fromisoformat(str(doc["deleted"]).replace("Z", "+00:00"))
        if t.tzinfo is None:
            raise ValueError("deletion time without a zone")
        row = doc["row"]
        dp.row = PointRecord(**{k: row[k] for k in _ROW_FIELDS})
        if dp.row.id != pid or dp.row.vm != vm:
            raise ValueError("its row names another point")
        for name, typ in (("created", str), ("logical_bytes", int), ("manifest", str), ("summary", dict)):
            if not isinstance(row[name], typ):
                raise ValueError(f"its row's {name} is {row[name]!r}")
        dp.verified = VerifyRecord(**doc["verified"]) if doc.get("verified") else None
        if stored is not None:
            t = max(t, datetime.fromtimestamp(stored, timezone.utc))
        dp.deleted, dp.expires = t, protection.expires(t)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        dp.problem = f"its deletion record {rpath} is unreadable ({exc})"
    if dp.manifest is None and dp.problem is None:
        dp.problem = "its manifest is missing"
    return dp


def by_ref(points: list[T], ref: str, missing: str) -> T:
    """The one point (anything with an ``id``) that ``ref`` names: its id, or a unique prefix of it. ``missing``:
    the error when none does."""
    match = [p for p in points if p.id == ref] or [p for p in points if p.id.startswith(ref)]
    if len(match) == 1:
        return match[0]
    if not match:
        raise NotFoundError(missing)
    raise UsageError(f"point {ref!r} is ambiguous: {', '.join(p.id for p in match)}; give more of its id")


def find(vault: Vault, protection: Protection, ref: str) -> DeletedPoint:
    """A soft-deleted point by id or unique id prefix."""
    return by_ref(scan(vault, protection), ref, f"no soft-deleted point {ref!r} in vault {vault.where}; list them "
                  "with 'cutpoint points --deleted'")


def undelete(vault: Vault, protection: Protection, dp: DeletedPoint, now: datetime) -> PointRecord:
    """Bring a soft-deleted point back. The caller holds the points lock exclusively and the VM's lock."""
    if dp.problem is not None or dp.row is None or dp.manifest is None:
        raise IntegrityError(f"point {dp.id} cannot be undeleted: {dp.problem}")
    if dp.expired(now):
        raise NotFoundError(f"point {dp.id} was deleted on {dp.deleted:%Y-%m-%d %H:%M}Z and its soft delete "
                            f"({protection.soft_delete_days} days) expired on {dp.expires:%Y-%m-%d %H:%M}Z: gc may "
                            "have freed its data; it cannot be undeleted")
    m = vault.manifest(dp.row, at=dp.manifest)  # authenticated, naming this point, before it becomes visible
    # the record is not authenticated: what prune and immutability judge by (its creation above all) comes from the
    # manifest, so a record rewritten to say "created in 2000" cannot age the point past its protection
    dp.row = replace(dp.row, created=m.created, consistency=m.consistency, mode=m.mode, pause_ms=m.pause_ms,
                     logical_bytes=sum(d.size for d in m.disks), read_bytes=sum(d.read_bytes for d in m.disks),
                     stored_bytes=sum(d.stored_bytes for d in m.disks))
    dest = vault.root / dp.row.manifest
    if vault.remote is not None:
        return _undelete_remote(vault, dp, dest)
    if dp.manifest != dest:
        try:
            dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.replace(dp.manifest, dest)
            fsync_dir(dest.parent)
            fsync_dir(dp.manifest.parent)
        except OSError as exc:
            raise VaultError(f"cannot move manifest {dp.manifest} back: {exc.strerror or exc}") from exc
    faults.hit("undelete-moved")
    vault.catalog.add_point(dp.row)                                     # the commit point
    if dp.verified is not None:
        vault.catalog.set_verified(dp.verified)
    if vault.catalog.points(dp.vm)[-1].id == dp.id:
        hoststate.committed(vault.root, dp.vm, dp.id)
    faults.hit("after-undelete-commit")
    dp.record.unlink(missing_ok=True)
    fsync_dir(dp.record.parent)
    return dp.row


def _undelete_remote(vault: Vault, dp: DeletedPoint, dest: Path) -> PointRecord:
    """S3: the manifest is copied back into ``points/`` (the commit point: visible from then on, for every host),
    then the row, then the copy in ``deleted/`` and the record go."""
    assert dp.row is not None and dp.manifest is not None
    b = vault.backend
    if dp.manifest != dest:
        b.put(dp.row.manifest, b.get(_name(vault, dp.manifest)))
        b.sync()
    faults.hit("undelete-moved")
    vault.catalog.add_point(dp.row)
    if dp.verified is not None:
        vault.catalog.set_verified(dp.verified)
    if vault.catalog.points(dp.vm)[-1].id == dp.id:
        hoststate.committed(vault.root, dp.vm, dp.id)
    faults.hit("after-undelete-commit")
    drop_stale(vault, dp.record)
    return dp.row


def purge(vault: Vault, dp: DeletedPoint, dry_run: bool) -> tuple[bool, int]:
    """gc, for an expired soft-deleted point: its record first (it is then no longer listed nor undeletable), then
    its manifest; a kill between leaves a manifest without row or record, which gc removes as an orphan. Returns
    whether it is gone and the bytes freed: on S3 the store may still retain the record (Object Lock, written at
    the deletion with the vault's immutability), and the point then stays listed, expired, until a later gc."""
    freed = 0
    for path in (dp.record, dp.manifest):
        if path is None:
            continue
        if vault.remote is not None:
            name = _name(vault, path)
            try:
                size = vault.backend.stat(name).size
            except NotFoundError:
                continue
            if not delete_unless_retained(vault.backend, name, dry_run):
                return path != dp.record, freed
            freed += size
            continue
        try:
            freed += path.stat().st_size
            if not dry_run:
                path.unlink()
                fsync_dir(path.parent)
        except FileNotFoundError:
            pass
    return True, freed
