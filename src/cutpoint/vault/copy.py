"""Offsite copies: points of one format v4 vault copied into another that shares its keys (docs/format.md §22).

Blobs travel *as stored*: a sealed blob is bound to its id and kind, not to its pack (as gc's repack relies on), so a
vault made with 'vault init TARGET --copy-of SOURCE' (same keys, chunk size and fanout) accepts them without
decoding, and an encrypted blob is never decrypted on the way. Only what the target lacks is copied:

1. under the source's points lock (shared: prune cannot remove a point mid-copy) and, per VM, the target's VM lock
   with a writer registration (target gc keeps the new packs and the old ones this copy relies on), walk the
   selected points' index trees in the source for the ids of their nodes and chunks;
2. subtract what the target's index lists (registering those packs, as a backup's deduplication does);
3. read the missing blobs from the source packs in pack order, adjacent ones in one ranged read, and append them to
   new target packs; every ``FLUSH_EVERY`` packs an index object lists them, so a rerun after kill -9 or a network
   failure reuses what arrived; ``flush`` at the end (packs, sync, index object, sync);
4. check that the target's index lists every blob the points reference (``verify_data``: read and decode them);
5. per point, the sealed manifest as is (the commit point), then the target's catalog row.

A point is visible in the target only once step 5 wrote its manifest, with everything it references durable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import faults, names
from ..catalog.db import PointRecord
from ..errors import IntegrityError, NotFoundError, UsageError
from . import hoststate, location, remote
from .blob import DATA, NODE
from .manifest import Manifest, manifest_path
from .packfile import pack_name
from .packgc import referenced
from .packindex import Location
from .packstore import PackStore
from .tree import ChunkTree
from .vault import Vault

FLUSH_EVERY = 4                 # packs between index objects: what a rerun after a kill finds already there
MAX_READ = 8 << 20              # one ranged read of a source pack covers at most this
GAP = 256 << 10                 # needed blobs closer than this in one pack are read together (the gap is dropped)
Progress = Callable[[str, int, int], None]      # (VM, stored bytes copied, stored bytes to copy)


@dataclass
class CopyResult:
    source: str
    target: str
    copied: list[str] = field(default_factory=list)      # points made visible in the target by this run
    skipped: list[str] = field(default_factory=list)     # points already there
    blobs: int = 0                                       # blobs written into the target
    bytes: int = 0                                       # their stored bytes
    packs: int = 0                                       # target packs written
    reused: int = 0                                      # blobs the points need that the target already held
    verified: int = 0                                    # blobs read back and decoded (--verify)
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RateLimit:
    """At most ``rate`` bytes per second on average since the start (None: no limit)."""

    def __init__(self, rate: int | None) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.sent = 0

    def take(self, n: int) -> None:
        self.sent += n
        if self.rate:
            wait = self.start + self.sent / self.rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)


def check_compatible(src: Vault, dst: Vault) -> None:
    """The target must open the source's blobs as stored: same keys, encryption, chunk size and fanout."""
    s, d = location.describe(src.root), location.describe(dst.root)
    for v, where in ((src, s), (dst, d)):
        if not v.packed:
            raise UsageError(f"vault {where} is format v{v.config['version']}; copies are between format v4 "
                             "vaults (back up into a new vault to move to v4)")
    if src.config["id"] == dst.config["id"]:
        raise UsageError(f"--from {s} and --to {d} are the same vault; give another --to")
    if (src.sealer.fingerprint, src.encrypted, src.chunk_size, src.fanout) != \
            (dst.sealer.fingerprint, dst.encrypted, dst.chunk_size, dst.fanout):
        how = location.address_of(src.root)
        raise UsageError(f"vault {d} (key {dst.sealer.fingerprint}) does not share the keys and chunk parameters "
                         f"of {s} (key {src.sealer.fingerprint}), and blobs are copied as stored; nothing was copied; "
                         f"create the target with: cutpoint vault init TARGET --copy-of {how}")


def select(src: Vault, vm: str | None, points: list[str] | None) -> list[PointRecord]:
    """The source's points to copy: those of ``vm`` (or all), narrowed to ``points`` (ids or unique prefixes)."""
    where = location.describe(src.root)
    recs = src.catalog.points(vm)
    if vm is not None and not recs:
        raise NotFoundError(f"VM {vm!r} has no points in vault {where}; list them with 'cutpoint points "
                            f"--vault {where}'")
    if points:
        chosen: list[PointRecord] = []
        for ref in points:
            match = [r for r in recs if r.id == ref] or [r for r in recs if r.id.startswith(ref)]
            if len(match) != 1:
                raise NotFoundError(f"point {ref!r} {'is ambiguous' if match else 'is not'} in vault {where}"
                                    f"{f' for VM {vm!r}' if vm else ''}; list them with 'cutpoint points "
                                    f"--vault {where}'")
            if match[0] not in chosen:
                chosen.append(match[0])
        recs = chosen
    for r in recs:
        if not names.is_valid(r.id) or not names.is_valid(r.vm):
            raise IntegrityError(f"catalog row {r.id!r} of vault {where} is damaged (not a point id or VM name); "
                                 "run 'cutpoint vault rebuild-catalog'")
    return recs


def copy(src: Vault, dst: Vault, vm: str | None = None, points: list[str] | None = None, *,
         rate: int | None = None, verify_data: bool = False, progress: Progress | None = None) -> CopyResult:
    """Copy the selected points of ``src`` into ``dst``; returns once every one is complete there. ``progress``
    is called with (VM, stored bytes copied, stored bytes to copy) after each read of the source; an exception it
    raises (a service's shutdown) stops the copy, which a rerun resumes."""
    t0 = time.monotonic()
    check_compatible(src, dst)
    dst.require_trusted("copying points into it")
    res = CopyResult(location.describe(src.root), location.describe(dst.root))
    limit = RateLimit(rate)
    with src.points_lock(shared=True):
        by_vm: dict[str, list[PointRecord]] = {}
        for rec in select(src, vm, points):
            by_vm.setdefault(rec.vm, []).append(rec)
        for name, recs in by_vm.items():
            with dst.vm_lock(name):
                _copy_vm(src, dst, recs, res, limit, verify_data, progress)
    res.duration_s = round(time.monotonic() - t0, 3)
    return res


def _copy_vm(src: Vault, dst: Vault, recs: list[PointRecord], res: CopyResult, limit: RateLimit,
             verify_data: bool, progress: Progress | None) -> None:
    sstore, dstore = src.chunks, dst.chunks
    assert isinstance(sstore, PackStore) and isinstance(dstore, PackStore)
    rows = {p.id for p in dst.catalog.points(recs[0].vm)}
    have = {r for r in rows                                    # a row whose manifest is gone is copied again
            if dst.backend.exists(str(manifest_path(dst.root, recs[0].vm, r).relative_to(dst.root)))}
    others = {p.id: p.vm for p in dst.catalog.points() if p.vm != recs[0].vm}
    todo: list[tuple[PointRecord, Manifest]] = []
    for rec in recs:
        if rec.id in have:
            res.skipped.append(rec.id)
        elif rec.id in others:
            raise UsageError(f"point {rec.id} of VM {rec.vm} cannot be copied into {res.target}: it holds a point "
                             f"of that id for VM {others[rec.id]}, and a catalog lists an id once; copy into "
                             f"another vault; none of VM {rec.vm}'s points being copied was made visible there")
        else:
            todo.append((rec, src.manifest(rec)))
    if not todo:
        return
    trees = [d.chunks for _, m in todo for d in m.disks if isinstance(d.chunks, ChunkTree)]
    needed = referenced(trees)
    dindex = dstore.reload()
    packs_before = dstore.own_packs()
    missing: list[tuple[Location, bytes]] = []
    sindex = sstore.index()
    for bid in needed:
        loc = dindex.where.get(bid)
        if loc is not None and dstore.rely(loc.pid):
            res.reused += 1
            continue
        sloc = sindex.where.get(bid)
        if sloc is None:
            raise IntegrityError(f"blob {bid.hex()} of the points being copied is missing from vault {res.source}; "
                                 f"run 'cutpoint verify --vault {res.source}'; none of VM {recs[0].vm}'s points "
                                 f"being copied was made visible in {res.target}")
        missing.append((sloc, bid))
    missing.sort(key=lambda m: (m[0].pid, m[0].offset))
    total, done = sum(loc.length for loc, _ in missing), 0
    i = 0
    while i < len(missing):
        first = missing[i][0]
        j, end = i + 1, first.offset + first.length
        while j < len(missing):
            nxt = missing[j][0]
            if nxt.pid != first.pid or nxt.offset - end > GAP or nxt.offset + nxt.length - first.offset > MAX_READ:
                break
            end = max(end, nxt.offset + nxt.length)
            j += 1
        faults.hit("copy-read")
        blobs = _read_run(sstore, missing[i:j], end)
        for (loc, bid), blob in zip(missing[i:j], blobs):
            try:        # as stored, but checked: a damaged copy in the source is never carried into the target
                sstore.codec.decode(bid, blob, loc.kind, loc.raw_length)
            except IntegrityError as exc:
                raise IntegrityError(f"{exc} (in vault {res.source}); run 'cutpoint verify --read-data --vault "
                                     f"{res.source}' (it marks the damaged copy, and the next backup stores that "
                                     f"content afresh), then copy again; none of VM {recs[0].vm}'s points being "
                                     f"copied was made visible in {res.target}") from exc
            dstore.put_stored(loc.kind, bid, blob, loc.raw_length)
            res.blobs += 1
            res.bytes += len(blob)
            limit.take(len(blob))
            if dstore.unindexed() >= FLUSH_EVERY:
                dstore.flush()
            done += len(blob)
        if progress is not None:
            progress(recs[0].vm, done, total)
        i = j
    dstore.flush()
    res.packs += dstore.own_packs() - packs_before
    _check_target(dstore, needed, res, verify_data)
    for rec, _m in todo:
        name = str(manifest_path(src.root, rec.vm, rec.id).relative_to(src.root))
        try:
            sealed = src.backend.get(name)
        except NotFoundError as exc:
            raise IntegrityError(f"manifest of point {rec.id} vanished from vault {res.source} during the copy") \
                from exc
        m = Manifest.unseal(dst.sealer, sealed, rec.vm, rec.id, f"manifest of point {rec.id}")   # opens as is
        faults.hit("copy-manifest")
        dst.write_manifest(rec.vm, rec.id, sealed)
        if rec.id in rows:
            dst.catalog.remove_points([rec.id])                # its stale row (the manifest was gone)
        # the row from the authenticated manifest, not from the source's catalog, which nothing authenticates: a
        # forged 'created' there would have aged the copy past the target's immutability
        row = remote.record_of(m, name)
        if isinstance(rec.summary, dict) and row.summary.get("duration_s") is None:     # display only
            row.summary["duration_s"] = rec.summary.get("duration_s")
        dst.catalog.add_point(row)
        hoststate.committed(dst.root, rec.vm, rec.id)
        res.copied.append(rec.id)


def _read_run(store: PackStore, run: list[tuple[Location, bytes]], end: int) -> list[bytes]:
    """The stored bytes of the blobs of ``run`` (one pack, ascending offsets), with one ranged read. A pack gone
    or short (gc repacked it meanwhile, or damage) is read blob by blob from wherever the reloaded index says."""
    first = run[0][0]
    try:
        data = store.backend.get(pack_name(first.pid), first.offset, end - first.offset)
    except NotFoundError:
        data = b""
    if len(data) == end - first.offset:
        return [data[loc.offset - first.offset:loc.offset - first.offset + loc.length] for loc, _ in run]
    out = []
    index = store.reload()
    for _, bid in run:
        loc = index.where.get(bid)
        try:
            blob = b"" if loc is None else store.backend.get(pack_name(loc.pid), loc.offset, loc.length)
        except NotFoundError:
            blob = b""
        if loc is None or len(blob) != loc.length:
            raise IntegrityError(f"blob {bid.hex()} cannot be read from its pack in the source vault (gone or "
                                 "truncated); run 'cutpoint verify --read-data' there")
        out.append(blob)
    return out


def _check_target(store: PackStore, needed: set[bytes], res: CopyResult, verify_data: bool) -> None:
    """Every blob the copied points reference is listed by the target's index, read again from the storage;
    ``verify_data``: read and decoded too (chunks in pack order, runs with one read)."""
    index = store.reload()
    absent = [b for b in needed if b not in index.where]
    if absent:
        raise IntegrityError(f"{len(absent)} blob(s) of the copied points are not in the index of {res.target} "
                             f"after the copy (first {absent[0].hex()}); run the copy again")
    if not verify_data:
        return
    order = sorted(needed, key=lambda b: (index.where[b].pid, index.where[b].offset))
    chunks = [b for b in order if index.where[b].kind == DATA]
    for b in order:
        if index.where[b].kind == NODE:
            store.get_blob(b, NODE, index.where[b].raw_length)
            res.verified += 1
    damaged: list[str] = []
    for k in range(0, len(chunks), 256):
        part = chunks[k:k + 256]
        try:
            store.get_many([b.hex() for b in part], [index.where[b].raw_length for b in part])
        except IntegrityError:
            for b in part:               # which: each marked, so that the rerun copies it again from the source
                try:
                    store.get(b.hex(), index.where[b].raw_length)
                except IntegrityError as exc:
                    damaged.append(str(exc))
                    store.mark_bad(b.hex())
        res.verified += len(part)
    if damaged:
        raise IntegrityError(f"{len(damaged)} chunk(s) the copied points reference are damaged in {res.target} "
                             f"({damaged[0]}); they are marked, and a rerun of the copy stores them again; no point "
                             "of this VM was made visible")
