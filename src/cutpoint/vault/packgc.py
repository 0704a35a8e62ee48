"""Garbage collection of a format v4 vault: delete packs no point needs, repack the ones mostly dead or small.

Safe while backups run, and kill -9 safe at every step (docs/format.md §18, the argument in full). The steps:

1. mark: walk every visible point's index trees (a subtree shared between points is read once) for the ids of
   nodes and chunks they reference;
2. under the exclusive ``locks/packs.lock`` (which a backup's registration of a relied-on pack waits for), read
   the running backups' registrations and mark the points committed since step 1 (``late``: a backup that relied
   on an old pack and ended during the mark left no registration, only its point), and choose: a pack older than the cutoff and registered by none is deleted
   if nothing in it is referenced, repacked if at least a quarter of it is dead or it is smaller than half a pack
   (unless the store retains it under S3 Object Lock: its copy would only sit beside it until it expires);
3. copy the live blobs of the repacked packs, as stored (no decoding), into new packs; sync;
4. write one index object for every pack kept and every new pack; sync; delete the index objects read in step 1;
5. delete the chosen packs, pack files no index lists (a writer killed before its index) that are older than the
   cutoff, and bad-blob markers of deleted packs. A pack no index lists but whose own trailer names a blob some
   point references and no listed pack holds is *adopted* instead: its index object was lost (it is what
   ``vault rebuild-index`` would bring back), and deleting it would lose that blob for good.

A kill before step 4 leaves new packs no index lists: young, they are kept, and a later gc deletes them. A kill
after it leaves duplicate index entries (harmless: any copy reads the same) or old packs no index lists, which the
next gc deletes. Index objects written meanwhile by backups are not among those read in step 1 and stay.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .. import faults
from ..errors import IntegrityError, NotFoundError
from . import locks, packindex
from .backend import ObjectInfo, delete_unless_retained
from .packindex import Location
from .packfile import Entry, PackBuffer, pack_id_of, pack_name
from .packrebuild import read_trailer
from .packstore import PACK_LOCK, PackStore
from .tree import ChunkTree

DEAD_RATIO = 0.25


@dataclass
class PackStats:
    packs_seen: int = 0
    packs_removed: int = 0
    packs_repacked: int = 0
    packs_written: int = 0
    repacked_bytes: int = 0
    kept_relied: int = 0
    kept_retained: int = 0          # S3 Object Lock: packs the store refused to delete before their retain-until
    packs_adopted: int = 0          # listed by no index, but holding referenced blobs no listed pack has
    retention_extended: int = 0     # S3 Object Lock: live packs and index objects whose retention was extended


def referenced(trees: list[ChunkTree], seen: set[bytes] | None = None) -> set[bytes]:
    """Ids of every node and chunk the trees reference, with the full nodes their deltas are read over. ``seen``:
    nodes an earlier mark walked (added to as this one goes), whose subtrees are not read again."""
    seen = set() if seen is None else seen
    bases: set[bytes] = set()
    chunks: set[bytes] = set()
    for t in trees:
        for _nid, level, entries in t.walk(seen, bases):
            if level == 0:
                chunks.update(e for e in entries if e is not None)
    return seen | bases | chunks


def relied_packs(locks_dir: Path) -> set[bytes]:
    """Packs the running backups registered (``locks.Writer.relied``: a pack id per line)."""
    out: set[bytes] = set()
    for w in locks.running_writers(locks_dir):
        try:
            lines = w.relied.read_text().splitlines()
        except FileNotFoundError:
            continue                        # relied on no old pack (yet)
        except OSError:
            continue
        for line in lines:
            try:
                out.add(bytes.fromhex(line.strip()))
            except ValueError:
                continue
    return out


def sweep(store: PackStore, live: set[bytes], cutoff: float, dry_run: bool,
          late: Callable[[], set[bytes]] | None = None,
          still_held: Callable[[], None] | None = None) -> tuple[PackStats, dict[str, int]]:
    """Steps 2 to 5. ``late``: the ids the points committed since ``live`` was marked reference, asked for under
    the packs lock. ``still_held``: raises if gc's vault lock no longer protects it (S3), asked before each step
    that deletes. Returns the statistics and the GcResult counters (removed_chunks, kept_young, freed_bytes,
    chunks_seen, removed_temp)."""
    st = PackStats()
    counts = {"removed_chunks": 0, "kept_young": 0, "freed_bytes": 0, "chunks_seen": 0, "removed_temp": 0}
    idx = store.reload(entries=True)
    listing: dict[bytes, ObjectInfo] = {}
    for obj in store.backend.list("data/"):
        pid = pack_id_of(obj.name)
        if pid is not None:
            listing[pid] = obj
    st.packs_seen = len(listing)
    for pid in [p for p in idx.packs if p not in listing]:
        # lost from the storage: the blobs' other copies (a later backup stored them again) are the live ones;
        # judged by the lost copy, the one left would be dropped
        idx.forget_pack(pid)
    store.locks_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(store.locks_dir / PACK_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        relied = relied_packs(store.locks_dir)
        if late is not None:
            live = live | late()
        doomed: list[bytes] = []
        repack: list[tuple[bytes, list[Entry]]] = []
        for pid, entries in idx.packs.items():
            info = listing.get(pid)
            if info is None:
                continue                                  # gone: verify reports what it held
            counts["chunks_seen"] += len(entries)
            keep = [e for e in entries if e.bid in live and (pid, e.offset) not in idx.bad
                    and idx.where.get(e.bid) is not None and idx.where[e.bid].pid == pid
                    and idx.where[e.bid].offset == e.offset]
            dead = sum(e.length for e in entries) - sum(e.length for e in keep)
            if not dead and info.size >= store.pack_size // 2:
                continue
            if info.mtime >= cutoff:
                counts["kept_young"] += len(entries) - len(keep)
                continue
            if pid in relied:
                st.kept_relied += 1
                continue
            if not keep:
                doomed.append(pid)
                counts["removed_chunks"] += len(entries) - len(keep)
            elif dead >= DEAD_RATIO * info.size or info.size < store.pack_size // 2:
                repack.append((pid, keep))
        orphans = [pid for pid, info in listing.items()
                   if pid not in idx.packs and info.mtime < cutoff and pid not in relied]
        adopted = _adoptable(store, idx.where, live, listing, orphans)
        taken = {pid for pid, _ in adopted}
        orphans = [pid for pid in orphans if pid not in taken]
        st.packs_adopted = len(adopted)
        if not _lone_small(idx.packs, repack):        # one small pack alone gains nothing from a rewrite
            repack = _unretained(store, repack, st)
        if _lone_small(idx.packs, repack):            # (also when the others are retained)
            repack = []
        for pid, keep in repack:
            counts["removed_chunks"] += len(idx.packs[pid]) - len(keep)
        if dry_run:                     # what would go; a repack's saving is known only once it is written
            going = [p for p in doomed + orphans if delete_unless_retained(store.backend, pack_name(p), dry_run)]
            counts["freed_bytes"] = sum(listing[p].size for p in going)
            st.packs_removed, st.packs_repacked = len(going), len(repack)
            st.kept_retained += len(doomed) + len(orphans) - len(going)
            return st, counts
        if not (doomed or repack or orphans or adopted):
            return st, counts
        check = still_held or (lambda: None)
        check()
        written = _copy(store, repack, st) if repack else []
        store.backend.sync()
        faults.hit("gc-repacked")
        check()
        gone = set(doomed) | {p for p, _ in repack}
        kept = [(pid, entries) for pid, entries in idx.packs.items() if pid in listing and pid not in gone] + adopted
        name = packindex.new_index_name()
        store.backend.put(name, packindex.encode_index(store.sealer, name, kept + written))
        store.backend.sync()
        faults.hit("gc-index-written")
        check()
        for old in sorted(idx.objects):
            delete_unless_retained(store.backend, old)   # one kept under retention lists packs twice: harmless
        store.backend.sync()
        check()
        deleted = set()
        for pid in sorted(gone) + orphans:
            if not delete_unless_retained(store.backend, pack_name(pid)):
                st.kept_retained += 1
                continue
            deleted.add(pid)
            counts["freed_bytes"] += listing[pid].size
            faults.hit("gc-sweep")
        counts["freed_bytes"] -= sum(_size(entries) for _, entries in written)
        st.packs_removed = len(deleted & (set(doomed) | set(orphans)))     # what went, not what was tried
        st.packs_repacked = len(repack)
        for marker in store.backend.list(packindex.BAD_PREFIX):
            if packindex.marker_pack(marker.name) in gone | set(orphans):
                store.backend.delete(marker.name)
        store.backend.sync()
    finally:
        os.close(fd)
    store.reload()
    return st, counts


def _lone_small(packs: Mapping[bytes, list[Entry]], repack: list[tuple[bytes, list[Entry]]]) -> bool:
    """One pack to repack, and nothing dead in it: a small pack alone, which a rewrite does not make fewer."""
    return len(repack) == 1 and len(repack[0][1]) == len(packs[repack[0][0]])


def _unretained(store: PackStore, repack: list[tuple[bytes, list[Entry]]],
                st: PackStats) -> list[tuple[bytes, list[Entry]]]:
    """The packs to repack without those the store retains (S3 Object Lock): a copy of their live blobs would sit
    beside them, stored twice, until their retain-until date; a gc after it repacks them. Counted as kept."""
    out = [(pid, keep) for pid, keep in repack if not store.backend.retained(pack_name(pid))]
    st.kept_retained += len(repack) - len(out)
    return out


def _adoptable(store: PackStore, where: Mapping[bytes, Location], live: set[bytes],
               listing: dict[bytes, ObjectInfo], orphans: list[bytes]) -> list[tuple[bytes, list[Entry]]]:
    """The unlisted packs that hold a referenced blob no listed pack that still exists has, with their entries (from
    their trailers). One whose trailer does not open stays an orphan: ``vault rebuild-index`` could not use it
    either."""
    out = []
    for pid in orphans:
        try:
            entries = read_trailer(store.backend, store.sealer, pid, listing[pid])
        except (IntegrityError, NotFoundError):
            continue
        if any(e.bid in live and ((loc := where.get(e.bid)) is None or loc.pid not in listing) for e in entries):
            out.append((pid, entries))
    return out


def extend_retention(store: PackStore, live: set[bytes], days: int) -> int:
    """S3 Object Lock: every pack holding a referenced blob, and every index object, retained ``days`` from now,
    so that a point's data outlives its immutability even where it was inherited from an old pack (§20.5)."""
    extend = getattr(store.backend, "extend_retention", None)
    if extend is None:
        return 0
    idx = store.reload(entries=True)
    names = [pack_name(pid) for pid, entries in idx.packs.items() if any(e.bid in live for e in entries)
             and pid not in idx.gone] + sorted(idx.objects)
    for name in names:
        try:
            extend(name, days)
        except NotFoundError:
            continue                      # repacked or lost meanwhile
    store.reload()
    return len(names)


def _size(entries: list[Entry]) -> int:
    return sum(e.length for e in entries)


def _copy(store: PackStore, repack: list[tuple[bytes, list[Entry]]], st: PackStats) -> list[tuple[bytes, list[Entry]]]:
    """The live blobs of ``repack``, copied as stored into new packs (a sealed blob is bound to its id, not to its
    pack, so it moves without being decoded)."""
    out: list[tuple[bytes, list[Entry]]] = []
    buf = PackBuffer(store.pack_size)

    def finish() -> None:
        if buf.entries:
            store.backend.put(pack_name(buf.pid), buf.finish(store.sealer))
            out.append((buf.pid, list(buf.entries)))
            st.packs_written += 1
            buf.reset()

    for pid, keep in repack:
        try:
            data = store.backend.get(pack_name(pid))
        except NotFoundError as exc:
            raise IntegrityError(f"gc stopped: pack {pid.hex()[:12]} vanished while being repacked") from exc
        for e in keep:
            blob = data[e.offset:e.offset + e.length]
            if len(blob) != e.length:
                raise IntegrityError(f"gc stopped before deleting anything: pack {pid.hex()[:12]} is truncated; "
                                     "run 'cutpoint verify --read-data'")
            buf.add(e.kind, e.bid, blob, e.raw_length)
            st.repacked_bytes += e.length
            if buf.full():
                finish()
    finish()
    return out
