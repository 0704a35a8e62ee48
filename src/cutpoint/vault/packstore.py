"""The blob store of a format v4 vault: blobs in packs, found through the index (docs/format.md §18).

It offers what the format v2/v3 ``ChunkStore`` offers (``chunk_id``, ``has``, ``put``, ``get``, ``flush``,
``mark_bad``), so restore, verify and replace read both formats through one interface, and adds index nodes
(``put_blob``/``get_blob`` with a kind).

Write order: blobs go into the pack being assembled; a full pack is written as one object; ``flush`` writes the
last pack, makes every pack durable with one ``Backend.sync``, then writes one index object for them and syncs
again. Only then may a manifest reference the blobs (``Vault.commit_point``).

Garbage collection runs while backups write. A blob that a running backup stores anew is in a pack younger than
that backup's start, which gc's cutoff keeps. A blob it finds already present (deduplication) lives in an old pack,
so before relying on it the backup *registers* the pack: under a shared ``flock`` on ``locks/packs.lock`` it checks
that the pack still exists and appends its id to the file beside its writer registration. Gc holds that lock exclusively from the
moment it reads the registrations until it has deleted packs, and never deletes or repacks a registered one.
A blob inherited unread from the parent point is referenced by that point, which cannot be pruned while the backup
holds the VM's lock; if gc repacks it meanwhile, a read finds the pack gone, reloads the index and reads the copy.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .. import faults
from ..errors import CutpointError, IntegrityError, NotFoundError, VaultError
from . import locks, packindex, packrebuild, readplan
from .backend import Backend
from .blob import DATA, NODE, BlobCodec
from .crypto import Sealer
from .packfile import Entry, PackBuffer, pack_id_of, pack_name
from .packindex import Index, Location

DEFAULT_PACK_SIZE = 16 << 20
PACK_LOCK = "packs.lock"
_HEX = re.compile(r"[0-9a-f]{64}")


class PackStore:
    def __init__(self, backend: Backend, sealer: Sealer, locks_dir: Path, *, max_size: int,
                 pack_size: int = DEFAULT_PACK_SIZE, uploads: int = 0) -> None:
        """``uploads``: packs written in the background at once, so that the workers filling the next pack never
        wait for a PUT or for the device (a vault opens with 4 on object storage, 1 in a directory); 0 writes each
        pack on the thread that filled it."""
        self.backend = backend
        self.sealer = sealer
        self.locks_dir = locks_dir
        self.max_size = max_size
        self.pack_size = pack_size
        self.codec = BlobCodec(sealer, max(max_size, 1 << 20))
        self._lock = threading.RLock()
        self._index: Index | None = None
        self._entries = False
        self._buf: PackBuffer | None = None
        self._unindexed: list[tuple[bytes, list[Entry]]] = []   # written packs not yet in an index object
        self._own: set[bytes] = set()          # packs this store wrote
        # packs written for the running writer: no registration needed. One written for an earlier writer of this
        # store (a copy of several VMs, one vm_lock each) is that writer's, whose registration went with it: a later
        # writer relying on it registers it like any old pack, or gc may delete it under the later point
        self._mine: set[bytes] = set()
        self._foreign = False                   # relied on a pack of another writer (``flush`` syncs for it)
        self._relied: set[bytes] = set()
        self.writer: Path | None = None        # the running backup's registration, where relied packs go
        self._failed: VaultError | None = None  # a pack write failed: later writes refuse (the buffer is gone)
        self._uploads = uploads
        self._uploader: ThreadPoolExecutor | None = None
        self._inflight: dict[bytes, tuple[Future[None], PackBuffer]] = {}   # packs being written, by id
        self._spare: list[PackBuffer] = []     # finished buffers, reused (fresh memory is slow here)

    # -- ids ---------------------------------------------------------------------------------------------------------

    def chunk_id(self, data: bytes | memoryview) -> str:
        return self.codec.blob_id(data, DATA).hex()

    @staticmethod
    def bid(cid: str) -> bytes:
        if not isinstance(cid, str) or not _HEX.fullmatch(cid):
            raise IntegrityError(f"{cid!r} is not a chunk id (damaged manifest or index node)")
        return bytes.fromhex(cid)

    # -- the index ---------------------------------------------------------------------------------------------------

    def index(self) -> Index:
        with self._lock:
            if self._index is None:
                self._index = packindex.load(self.backend, self.sealer, self._entries)
                for pid, entries in self._unindexed:
                    self._index.add(pid, entries)
                if self._buf is not None and self._buf.entries:
                    self._index.add(self._buf.pid, list(self._buf.entries))
            return self._index

    def reload(self, entries: bool = False) -> Index:
        """The index read again; with ``entries``, with every pack's entry list (gc)."""
        with self._lock:
            self._index = None
            self._entries = entries
            return self.index()

    def location(self, cid: str) -> Location | None:
        return self.index().where.get(self.bid(cid))

    def has(self, cid: str) -> bool:
        return self.bid(cid) in self.index().where

    def state(self, cid: str) -> str:
        """'ok', 'bad' (a damaged copy marked by verify, no good one) or 'missing'."""
        b = self.bid(cid)
        idx = self.index()
        return "ok" if b in idx.where else "bad" if b in idx.bad_ids else "missing"

    def lost_ids(self) -> set[bytes]:
        """Blobs an incremental must not inherit: those of which verify found only damaged copies, and those whose
        pack is listed by the index but gone from the storage (one listing of ``data/``)."""
        idx = self.index()
        lost = {b for b in idx.bad_ids if b not in idx.where}
        present = {pack_id_of(i.name) for i in self.backend.list("data/")}
        with self._lock:
            present |= self._own | ({self._buf.pid} if self._buf is not None else set())
        gone = {loc.pid for loc in idx.where.values()} - present
        with self._lock:
            for pid in gone:
                lost |= idx.forget_pack(pid)         # blobs with a copy in a pack still there keep it
        return lost

    def stored_size(self, cid: str) -> int:
        loc = self.location(cid)
        return loc.length if loc else 0

    # -- writing -----------------------------------------------------------------------------------------------------

    def begin_writer(self, registration: Path | None) -> None:
        """A backup starts (``Vault.vm_lock``): relied packs are registered beside its registration from now on
        (``locks.Writer.relied``), or not at all with None."""
        with self._lock:
            self.writer = registration
            self._relied = set()
            self._mine = set()
            self._foreign = False

    def put(self, data: bytes | memoryview, cid: str | None = None) -> tuple[str, int]:
        bid, written = self.put_blob(data, DATA, bytes.fromhex(cid) if cid else None)
        return bid.hex(), written

    def put_blob(self, data: bytes | memoryview, kind: int, bid: bytes | None = None) -> tuple[bytes, int]:
        """Store ``data`` unless a usable copy exists. Returns (id, bytes written)."""
        return self.put_many([data], kind, [bid] if bid else None)[0]

    def put_many(self, datas: list[memoryview] | list[bytes | memoryview], kind: int,
                 bids: list[bytes] | None = None) -> list[tuple[bytes, int]]:
        """Store several blobs (a run of consecutive chunks): each is hashed, checked for a copy and encoded on the
        calling thread, then the new ones are appended to the pack together, so that a run stays contiguous in its
        pack and a restore reads it back with one read."""
        ids = bids or [self.codec.blob_id(d, kind) for d in datas]
        out: list[tuple[bytes, int]] = []
        new: list[tuple[int, tuple[bytes | memoryview, ...]]] = []
        queued: set[bytes] = set()
        where = self.index().where
        for k, (bid, data) in enumerate(zip(ids, datas)):
            out.append((bid, 0))
            loc = where.get(bid)
            if bid in queued or (loc is not None and self._rely(loc.pid)):
                continue
            queued.add(bid)
            new.append((k, self.codec.encode(bid, data, kind)))
        if not new:
            return out
        faults.hit("chunk-write")                      # chunks encoded, not yet in a pack
        with self._lock:
            if self._failed is not None:
                raise VaultError(f"{self._failed}; nothing more is stored by this backup") from self._failed
            idx = self.index()
            for k, blob in new:
                bid = ids[k]
                loc = idx.where.get(bid)
                if loc is not None and (loc.pid in self._mine or (self._buf is not None and loc.pid == self._buf.pid)):
                    continue                           # another thread stored it meanwhile
                if self._buf is None:
                    self._buf = self._spare.pop() if self._spare else PackBuffer(self.pack_size)
                e = self._buf.add_parts(kind, bid, blob, len(datas[k]))
                idx.where[bid] = Location(self._buf.pid, e.offset, e.length, e.raw_length, kind)
                out[k] = (bid, e.length)
            if self._buf is not None and self._buf.full():
                self._write_pack()
        return out

    def rely(self, pid: bytes) -> bool:
        """May a new point (a backup's, or a copy's) reference the blobs of pack ``pid``? Registers the pack with
        the running writer, so that gc keeps it; False if the pack is gone."""
        return self._rely(pid)

    def put_stored(self, kind: int, bid: bytes, blob: bytes | memoryview, raw_length: int) -> int:
        """Append a blob *as stored* (sealed and encoded by a vault with the same keys: ``vault/copy.py``) to the
        pack being assembled; a full pack is written. Returns the packs written by this call (0 or 1)."""
        with self._lock:
            if self._failed is not None:
                raise VaultError(f"{self._failed}; nothing more is stored") from self._failed
            if self._buf is None:
                self._buf = PackBuffer(self.pack_size)
            e = self._buf.add(kind, bid, blob, raw_length)
            self.index().where[bid] = Location(self._buf.pid, e.offset, e.length, e.raw_length, kind)
            if self._buf.full():
                self._write_pack()
                return 1
            return 0

    def own_packs(self) -> int:
        """Packs this store has written so far."""
        return len(self._own)

    def unindexed(self) -> int:
        """Packs written and not yet listed by an index object (``flush`` lists them)."""
        return len(self._unindexed)

    def _rely(self, pid: bytes) -> bool:
        """May a new point reference a blob of pack ``pid``? Registers the pack for gc (see module doc)."""
        with self._lock:
            if pid in self._mine or pid in self._relied or (self._buf is not None and pid == self._buf.pid):
                return True
            if self.writer is None:
                there = self.backend.exists(pack_name(pid))
                self._foreign |= there
                return there
            self.locks_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.locks_dir / PACK_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)           # waits while gc decides and deletes
                if not self.backend.exists(pack_name(pid)):
                    return False                         # deleted by gc: store the blob afresh
                with open(locks.relied_path(self.writer), "a") as f:
                    f.write(pid.hex() + "\n")
            except OSError as exc:
                raise VaultError(f"cannot register pack {pid.hex()[:12]} for this backup: "
                                 f"{exc.strerror or exc}") from exc
            finally:
                os.close(fd)
            self._relied.add(pid)
            self._foreign = True
            return True

    def _write_pack(self) -> None:
        buf = self._buf
        if buf is None or not buf.entries:
            return
        if self._uploads:
            self._reap(self._uploads - 1)               # at most ``uploads`` in flight: wait for the oldest
            if self._uploader is None:
                self._uploader = ThreadPoolExecutor(self._uploads, thread_name_prefix="pack-upload")
            view = buf.finish(self.sealer)
            fut = self._uploader.submit(self.backend.put, pack_name(buf.pid), view)
            self._inflight[buf.pid] = (fut, buf)
            self._own.add(buf.pid)
            self._mine.add(buf.pid)
            self._unindexed.append((buf.pid, list(buf.entries)))
            self._buf = None
            return
        view = buf.finish(self.sealer)
        try:
            self.backend.put(pack_name(buf.pid), view)
        except OSError as exc:
            # The failed write's traceback keeps the buffer exported: drop the buffer and its blobs (no point can
            # reference them, nothing indexed them) and refuse further writes from other threads, by class.
            self._failed = VaultError(f"cannot write pack {buf.pid.hex()[:12]}: {exc.strerror or exc}")
            self._buf = None
            self._index = None
            raise self._failed from exc
        finally:
            del view
        faults.hit("pack-written")
        self._own.add(buf.pid)
        self._mine.add(buf.pid)
        self._unindexed.append((buf.pid, list(buf.entries)))
        buf.reset()

    def _reap(self, keep: int) -> None:
        """Wait until at most ``keep`` background writes are in flight (oldest first); their buffers are reused.
        A failed write fails the store as a synchronous one does: no later write, nothing of it indexed."""
        while self._inflight:
            pid, (fut, buf) = next(iter(self._inflight.items()))
            if len(self._inflight) <= keep and not fut.done():
                return
            try:
                fut.result()
            except (OSError, CutpointError) as exc:
                self._inflight.clear()
                self._buf = None
                self._index = None
                self._failed = VaultError(f"cannot write pack {pid.hex()[:12]}: "
                                          f"{exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}")
                raise self._failed from exc
            del self._inflight[pid]
            faults.hit("pack-written")
            buf.reset()
            if len(self._spare) <= self._uploads:
                self._spare.append(buf)

    def close(self) -> None:
        """Wait for background writes (a store closed without ``flush`` leaves only unindexed packs, as a kill)."""
        with self._lock:
            if self._uploader is not None:
                self._uploader.shutdown(wait=True)
                self._uploader = None
            self._inflight.clear()

    def flush(self) -> None:
        """Everything stored so far durable and indexed: packs, one sync, the index object, one sync."""
        with self._lock:
            if self._failed is not None:
                raise VaultError(str(self._failed)) from self._failed
            self._write_pack()
            self._reap(0)
            if not self._unindexed:
                if self._foreign:
                    # deduplicated against other writers' packs, whose index objects may have been written but
                    # not yet synced: this point's manifest must not be durable before them (v3's
                    # test_dedup_hit_not_fsynced; a copy that reuses everything is one such writer)
                    self.backend.sync()
                return
            try:
                self.backend.sync()
                faults.hit("after-packs")
                name = packindex.new_index_name()
                self.backend.put(name, packindex.encode_index(self.sealer, name, self._unindexed))
                self.backend.sync()
            except OSError as exc:
                raise VaultError(f"cannot write the vault's index: {exc.strerror or exc}") from exc
            if self._index is not None:
                self._index.objects.add(name)
            self._unindexed = []

    # -- reading -----------------------------------------------------------------------------------------------------

    def get(self, cid: str, expect: int | None = None) -> bytes:
        return self.get_blob(self.bid(cid), DATA, expect)

    def get_blob(self, bid: bytes, kind: int, expect: int | None = None) -> bytes:
        """Read, decode and check one blob; damage raises ``IntegrityError``, absence ``NotFoundError``."""
        for attempt in (0, 1):
            idx = self.index() if attempt == 0 else self.reload()
            while (loc := idx.where.get(bid)) is not None:
                if loc.kind != kind:
                    raise IntegrityError(f"blob {bid.hex()} is a {_KIND[loc.kind]} where a {_KIND[kind]} is "
                                         "expected")
                try:
                    blob = self._read(loc)
                    break
                except NotFoundError:        # its pack is gone (lost, or repacked by gc): another copy, if any
                    with self._lock:
                        idx.forget_pack(loc.pid)
            if loc is None:
                continue                     # no copy in this index: reload once (gc may have repacked it)
            if len(blob) != loc.length:
                raise IntegrityError(f"{_KIND[kind]} {bid.hex()} is damaged: its pack {loc.pid.hex()[:12]} "
                                     "is truncated")
            return self.codec.decode(bid, blob, kind, expect)
        if bid in self.index().bad_ids:
            raise IntegrityError(f"{_KIND[kind]} {bid.hex()} is damaged (marked by an earlier verify)")
        raise NotFoundError(f"{_KIND[kind]} {bid.hex()} is missing from the vault")

    def get_many(self, cids: list[str], expects: list[int]) -> list[bytes]:
        """The chunks, reading each stretch of adjacent blobs in one pack with one storage read (a restore's runs
        were written in order, so a run is usually one read). Anything unusual goes through ``get``."""
        out: dict[int, bytes] = {}
        for group in self.plan_reads(cids):
            for k, data in self.read_group([cids[j] for j in group], [expects[j] for j in group]):
                out[group[k]] = data
        return [out[k] for k in range(len(cids))]

    def plan_reads(self, cids: list[str], *, gap: int = 0, span: int = 0) -> list[list[int]]:
        """Positions of ``cids`` in groups that ``read_group`` reads with one storage read each (``readplan``)."""
        return readplan.plan_reads(self.index().where, [self.bid(c) for c in cids], gap=gap, span=span)

    def read_group(self, cids: list[str], expects: Sequence[int | None]) -> Iterator[tuple[int, bytes]]:
        """(position, checked bytes) of each chunk, in pack order, read with one storage read when they lie in one
        pack (holes between them are read and dropped); a repeated id is read and checked once. A pack that is gone
        or shorter than listed (gc moved it meanwhile, or damage) sends every chunk through ``get``, which reloads
        the index and names what is wrong."""
        bids = [self.bid(c) for c in cids]
        where = self.index().where
        ok = [loc for b in bids if (loc := where.get(b)) is not None and loc.kind == DATA]
        if not ok or len(ok) != len(bids) or any(loc.pid != ok[0].pid for loc in ok):
            for k, (c, e) in enumerate(zip(cids, expects)):
                yield k, self.get(c, e)
            return
        start = min(loc.offset for loc in ok)
        end = max(loc.offset + loc.length for loc in ok)
        try:
            blob = self._read(Location(ok[0].pid, start, end - start, 0, DATA))
        except NotFoundError:
            blob = b""
        if len(blob) != end - start:                  # moved by gc, or truncated: chunk by chunk, with reloads
            for k, (c, e) in enumerate(zip(cids, expects)):
                yield k, self.get(c, e)
            return
        mv = memoryview(blob)
        last: tuple[bytes, int | None] | None = None
        data = b""
        for k in sorted(range(len(ok)), key=lambda x: (ok[x].offset, x)):     # a repeated id: adjacent here
            loc = ok[k]
            if last != (bids[k], expects[k]):
                a = loc.offset - start
                data = self.codec.decode(bids[k], mv[a:a + loc.length], DATA, expects[k])
                last = (bids[k], expects[k])
            yield k, data

    def _read(self, loc: Location) -> bytes:
        with self._lock:
            if self._buf is not None and loc.pid == self._buf.pid:
                return self._buf.read(loc.offset, loc.length)
            if loc.pid in self._inflight:
                return self._inflight[loc.pid][1].read(loc.offset, loc.length)
        return self.backend.get(pack_name(loc.pid), loc.offset, loc.length)

    def rebuild_index(self) -> tuple[int, list[str]]:
        """One index object for every pack, from the packs' own trailers (``packrebuild``); the caller holds the
        gc lock. Returns (packs indexed, problems)."""
        out = packrebuild.rebuild_index(self.backend, self.sealer)
        self.reload()
        return out

    def mark_bad(self, cid: str) -> bool:
        """Record the damaged copy of a chunk, so that the next backup stores its content afresh."""
        bid = self.bid(cid)
        with self._lock:
            loc = self.index().where.get(bid)
            if loc is None:
                return False
            self.backend.put(packindex.bad_marker(bid, loc), b"")
            self.reload(self._entries)          # another, good copy of the same content is used if there is one
        return True


_KIND = {DATA: "chunk", NODE: "index node"}
