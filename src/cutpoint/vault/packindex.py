"""The index of a format v4 vault: which pack holds each blob, and where in it (docs/format.md §18).

On the storage, the index is a set of *index objects* (``index/<random hex>``), each listing the blobs of some packs:
a backup writes one at its commit for the packs it wrote, and gc replaces the ones it read by one for what it kept.
Index objects are sealed and zstd-compressed, with their own name as associated data. In memory, the union of all
of them is one dict from blob id to location, loaded when a vault's blobs are first needed and again when a pack
turns out to have moved (gc repacked it).

Verify records a damaged blob as an empty object ``bad/<blob id>-<pack id>-<offset>`` naming the damaged copy: that location
is then ignored, so the next backup that meets the same content stores it afresh instead of deduplicating against
the damaged copy, and readers use a good copy where one exists.
"""

from __future__ import annotations

import secrets
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import zstandard

from ..errors import IntegrityError, NotFoundError, VaultError
from . import codec
from .backend import Backend
from .crypto import Sealer
from .packfile import ENTRY, Entry

MAGIC = b"CPI4"
PACK_HEAD = struct.Struct("<32sI")
MAX_INDEX = 1 << 30
INDEX_PREFIX = "index/"
BAD_PREFIX = "bad/"


@dataclass(slots=True)
class Location:
    """Where a blob's copy is. Never changed once made, but not ``frozen``: the index holds one per blob, and a
    frozen dataclass sets each field through ``object.__setattr__``, 4x slower, which was half of every index load."""
    pid: bytes
    offset: int
    length: int
    raw_length: int
    kind: int


Row = tuple[int, bytes, int, int, int]      # an index entry as stored: kind, blob id, offset, length, raw length


def new_index_name() -> str:
    return INDEX_PREFIX + secrets.token_hex(32)


def encode_index(sealer: Sealer, name: str, packs: Iterable[tuple[bytes, list[Entry]]]) -> bytes:
    parts: list[bytes] = []
    for pid, entries in packs:
        parts.append(PACK_HEAD.pack(pid, len(entries)))
        parts.extend(ENTRY.pack(e.kind, e.bid, e.offset, e.length, e.raw_length) for e in entries)
    body = zstandard.ZstdCompressor(level=1).compress(b"".join(parts))
    return sealer.seal(MAGIC, body, name.encode())


def decode_index(sealer: Sealer, name: str, blob: bytes) -> list[tuple[bytes, list[Entry]]]:
    return [(pid, [Entry(*r) for r in rows]) for pid, rows in _decode_rows(sealer, name, blob)]


def _decode_rows(sealer: Sealer, name: str, blob: bytes) -> list[tuple[bytes, list[Row]]]:
    """Every pack an index object lists, with its entries as stored; a damaged object raises, whole."""
    what = f"index object {name}"
    raw = memoryview(codec.decompress(sealer.unseal(MAGIC, blob, name.encode(), what), MAX_INDEX, what))
    out: list[tuple[bytes, list[Row]]] = []
    pos = 0
    try:
        while pos < len(raw):
            pid, n = PACK_HEAD.unpack_from(raw, pos)
            pos += PACK_HEAD.size
            if pos + n * ENTRY.size > len(raw):
                raise IntegrityError(f"{what} is damaged: pack {pid.hex()[:12]} lists {n} blobs past its end")
            rows: list[Row] = list(ENTRY.iter_unpack(raw[pos:pos + n * ENTRY.size]))
            pos += n * ENTRY.size
            if any(r[0] > 1 for r in rows):
                raise IntegrityError(f"{what} is damaged: unknown blob kind")
            out.append((pid, rows))
    except struct.error as exc:
        raise IntegrityError(f"{what} is damaged: {exc}") from exc
    return out


@dataclass
class Index:
    where: dict[bytes, Location] = field(default_factory=dict)
    objects: set[str] = field(default_factory=set)             # the index objects this was loaded from
    packs: dict[bytes, list[Entry]] = field(default_factory=dict)   # every pack's entries (only if ``entries``)
    entries: bool = False                                       # keep ``packs``: gc and rebuild need them
    bad: set[tuple[bytes, int]] = field(default_factory=set)
    bad_ids: set[bytes] = field(default_factory=set)
    # Further copies of a blob (rare: two writers stored the same content, or a lost pack's blobs were stored
    # again): which copy ``where`` names depends on the order index objects are listed in, so a copy in a pack
    # that is gone must give way to another one (``forget_pack``), not make the blob look missing.
    alt: dict[bytes, list[Location]] = field(default_factory=dict)
    gone: set[bytes] = field(default_factory=set)               # packs found missing from the storage

    def add(self, pid: bytes, entries: list[Entry]) -> None:
        if self.entries:
            self.packs[pid] = entries
        self._locate(pid, [(e.kind, e.bid, e.offset, e.length, e.raw_length) for e in entries])

    def add_rows(self, pid: bytes, rows: list[Row]) -> None:
        """``add`` for entries as an index object stores them (no ``Entry`` made unless ``entries`` keeps them)."""
        if self.entries:
            self.packs[pid] = [Entry(*r) for r in rows]
        self._locate(pid, rows)

    def _locate(self, pid: bytes, rows: list[Row]) -> None:
        if pid in self.gone:
            return
        where, bad = self.where, self.bad
        for kind, bid, offset, length, raw_length in rows:
            if bad and (pid, offset) in bad:
                continue
            loc = Location(pid, offset, length, raw_length, kind)
            if bid not in where:
                where[bid] = loc
            else:
                self.alt.setdefault(bid, []).append(loc)

    def _replace(self, bid: bytes) -> bool:
        """``where[bid]`` is unusable: another copy takes its place. False (and no entry) if there is none."""
        others = [a for a in self.alt.pop(bid, []) if a.pid not in self.gone and (a.pid, a.offset) not in self.bad]
        if others:
            self.where[bid] = others[0]
            if others[1:]:
                self.alt[bid] = others[1:]
            return True
        del self.where[bid]
        return False

    def forget_pack(self, pid: bytes) -> set[bytes]:
        """A listed pack found gone from the storage: its copies are dropped and other copies of the same blobs
        take their place. Returns the blobs left with no copy."""
        self.gone.add(pid)
        self.packs.pop(pid, None)
        return {bid for bid in [b for b, loc in self.where.items() if loc.pid == pid] if not self._replace(bid)}

    def drop_pack(self, pid: bytes) -> None:
        for e in self.packs.pop(pid, []):
            loc = self.where.get(e.bid)
            if loc is not None and loc.pid == pid:
                self.gone.add(pid)
                self._replace(e.bid)

    def mark_bad(self, bid: bytes, loc: Location) -> None:
        """Forget a damaged copy; another copy, if any, takes its place."""
        self.bad.add((loc.pid, loc.offset))
        self.bad_ids.add(bid)
        if self.where.get(bid) == loc:
            self._replace(bid)


def load(backend: Backend, sealer: Sealer, entries: bool = False) -> Index:
    """Every index object and bad-blob marker of the vault. A damaged index object stops the load by name: a
    reader must not mistake 'not in the index' for 'not in the vault'. Memory: one dict entry per blob (about
    200 bytes); every pack's entry list too only with ``entries`` (gc)."""
    idx = Index(entries=entries)
    for info in backend.list(BAD_PREFIX):
        try:
            bid_hex, pid_hex, off = info.name[len(BAD_PREFIX):].split("-")
            idx.bad.add((bytes.fromhex(pid_hex), int(off)))
            idx.bad_ids.add(bytes.fromhex(bid_hex))
        except ValueError:
            continue                    # a malformed marker marks nothing
    for attempt in range(LOAD_ATTEMPTS):
        try:
            _load_objects(backend, sealer, idx)
            return idx
        except _Replaced:
            # gc swapped the index objects between the listing and the reads (it writes the new one before it
            # deletes the old): skipping the gone one would lose the blobs only the new one lists, so list again,
            # after a pause in which gc finishes deleting the old ones
            time.sleep(0.05 * (attempt + 1))
            idx.where.clear()
            idx.alt.clear()
            idx.packs.clear()
            idx.objects.clear()
    raise VaultError("the vault's index objects kept changing while they were read (gc running again and again); "
                     "try again")


LOAD_ATTEMPTS = 5


class _Replaced(Exception):
    pass


def _load_objects(backend: Backend, sealer: Sealer, idx: Index) -> None:
    for info in sorted(backend.list(INDEX_PREFIX), key=lambda i: i.name):
        if info.size > MAX_INDEX + 4096:          # a sealed, compressed index object is never larger than that
            raise IntegrityError(f"index object {info.name} is damaged: {info.size} bytes, more than an index "
                                 "object holds; run 'cutpoint vault rebuild-index' (the packs list their own "
                                 "blobs: no data is lost with an index object)")
        try:
            blob = backend.get(info.name)
        except NotFoundError:
            raise _Replaced from None
        try:
            rows = _decode_rows(sealer, info.name, blob)
        except IntegrityError as exc:
            raise IntegrityError(f"{exc}; run 'cutpoint vault rebuild-index' (the packs list their own blobs: no "
                                 "data is lost with an index object)") from exc
        for pid, pack_rows in rows:
            idx.add_rows(pid, pack_rows)
        idx.objects.add(info.name)


def bad_marker(bid: bytes, loc: Location) -> str:
    """The name of the (empty) object that marks one damaged copy of a blob."""
    return f"{BAD_PREFIX}{bid.hex()}-{loc.pid.hex()}-{loc.offset}"


def marker_pack(name: str) -> bytes | None:
    try:
        return bytes.fromhex(name[len(BAD_PREFIX):].split("-")[1])
    except (ValueError, IndexError):
        return None
