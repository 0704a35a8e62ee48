"""Pack files of format v4: many blobs in one object of about 16 MiB, with a sealed table of contents at its end.

Layout (docs/format.md §18)::

    blob blob ... blob  trailer  trailer_length(u32 LE)  b"CPK4"

The trailer is sealed (magic ``CPT4``, the pack's id as associated data) and lists every blob: kind, id, offset,
stored length and decoded length. It makes every pack self-describing, so the index can be rebuilt from the packs
alone (``packrebuild``) and a copy to another vault needs no other object. A pack is assembled in one
reused buffer (fresh memory is slow here: docs/performance.md) and written with one ``put``.
"""

from __future__ import annotations

import mmap
import secrets
import struct
from dataclasses import dataclass

from ..errors import IntegrityError
from .crypto import Sealer

TRAILER_MAGIC = b"CPT4"
END_MAGIC = b"CPK4"
ENTRY = struct.Struct("<B32sQII")          # kind, id, offset, stored length, decoded length
END = struct.Struct("<I4s")
MAX_ENTRIES = 1 << 20
# the longest sealed trailer a pack can have: its entries, and a seal's header, nonce and tag (under 64 bytes). A
# hostile end claiming more is refused before anything that long is read (gc reads the trailers of unlisted files)
MAX_TRAILER = MAX_ENTRIES * ENTRY.size + 64


@dataclass(frozen=True)
class Entry:
    kind: int
    bid: bytes
    offset: int
    length: int
    raw_length: int


def new_pack_id() -> bytes:
    return secrets.token_bytes(32)


def pack_name(pid: bytes) -> str:
    h = pid.hex()
    return f"data/{h[:2]}/{h}"


def pack_id_of(name: str) -> bytes | None:
    """The id of a pack object name, or None if the name is not one (a listing is untrusted)."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "data" or len(parts[2]) != 64 or parts[1] != parts[2][:2]:
        return None
    try:
        return bytes.fromhex(parts[2])
    except ValueError:
        return None


class PackBuffer:
    """The pack being assembled: blobs appended to a reused buffer, finished into one object.

    The buffer is an anonymous mapping: page-aligned, so a local vault writes it to the device with ``O_DIRECT``
    as it is (``directio``: no copy into an aligned buffer, which ran with the GIL held), and zero-filled by the
    kernel only where it is written, so the room reserved past ``target`` for the last run's blobs and the trailer
    costs no memory unless used. Its pages are faulted in by the first pack and reused by every later one."""

    def __init__(self, target: int, room: int = 8 << 20) -> None:
        self.target = target
        self.room = room
        self.buf = mmap.mmap(-1, target + room)
        self.reset()

    def reset(self) -> None:
        self.pid = new_pack_id()
        self.used = 0
        self.entries: list[Entry] = []

    def _fit(self, end: int) -> None:
        """Room for ``end`` bytes (a blob or trailer larger than the reserve: rare): a larger mapping, the bytes so
        far copied. The old one goes when its last view does (a pack being written may still hold one)."""
        if end > len(self.buf):
            new = mmap.mmap(-1, end + self.room)
            with memoryview(self.buf) as old:
                new[:self.used] = old[:self.used]
            self.buf = new

    def add(self, kind: int, bid: bytes, blob: bytes | memoryview, raw_length: int) -> Entry:
        return self.add_parts(kind, bid, (blob,), raw_length)

    def add_parts(self, kind: int, bid: bytes, parts: tuple[bytes | memoryview, ...], raw_length: int) -> Entry:
        """One blob given as pieces (``BlobCodec.encode``), copied into the pack one after another."""
        start = pos = self.used
        self._fit(start + sum(len(p) for p in parts))
        for p in parts:
            end = pos + len(p)
            self.buf[pos:end] = p
            pos = end
        e = Entry(kind, bid, start, pos - start, raw_length)
        self.entries.append(e)
        self.used = pos
        return e

    def full(self) -> bool:
        return self.used >= self.target

    def read(self, offset: int, length: int) -> bytes:
        return self.buf[offset:offset + length]

    def finish(self, sealer: Sealer) -> memoryview:
        """The whole pack (a view into the buffer, valid until the next ``reset``)."""
        table = b"".join(ENTRY.pack(e.kind, e.bid, e.offset, e.length, e.raw_length) for e in self.entries)
        trailer = sealer.seal(TRAILER_MAGIC, table, self.pid)
        tail = trailer + END.pack(len(trailer), END_MAGIC)
        stop = self.used + len(tail)
        self._fit(stop)
        self.buf[self.used:stop] = tail
        return memoryview(self.buf)[:stop]


def parse_trailer(sealer: Sealer, pid: bytes, tail: bytes, size: int) -> list[Entry]:
    """The entries of a pack from its last bytes (``tail``, at least the trailer and end), checked against the
    pack's size: a hostile trailer cannot name bytes outside the pack."""
    what = f"pack {pid.hex()}"
    if len(tail) < END.size:
        raise IntegrityError(f"{what} is damaged: truncated")
    tlen, magic = END.unpack_from(tail, len(tail) - END.size)
    if magic != END_MAGIC or tlen + END.size > len(tail) or tlen > MAX_TRAILER:
        raise IntegrityError(f"{what} is damaged: no trailer (truncated, or not a pack)")
    start = len(tail) - END.size - tlen
    table = sealer.unseal(TRAILER_MAGIC, bytes(tail[start:len(tail) - END.size]), pid, f"trailer of {what}")
    limit = size - END.size - tlen
    if len(table) % ENTRY.size or len(table) // ENTRY.size > MAX_ENTRIES:
        raise IntegrityError(f"trailer of {what} is damaged: {len(table)} bytes")
    out = []
    for kind, bid, off, ln, raw in ENTRY.iter_unpack(table):
        if kind > 1 or off + ln > limit:
            raise IntegrityError(f"trailer of {what} is damaged: entry {bid.hex()[:12]} out of range")
        out.append(Entry(kind, bid, off, ln, raw))
    return out


def trailer_length(tail: bytes) -> int | None:
    """The trailer's length from the pack's last 8 bytes, or None if they are not a pack's end."""
    if len(tail) < END.size:
        return None
    tlen, magic = END.unpack_from(tail, len(tail) - END.size)
    return int(tlen) if magic == END_MAGIC and tlen <= MAX_TRAILER else None
