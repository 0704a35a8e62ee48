"""Reading a frozen disk from QEMU's NBD export with libnbd (Debian's python3-libnbd).

Two things make reading cheap: ``base:allocation`` block status tells which ranges read as zero (never fetched), and
the ``qemu:dirty-bitmap:NAME`` context of the previous point's disabled bitmap tells which ranges changed since then.
A single NBD request is limited to 32 MiB, so reads are issued in pieces; a backup's bulk reads (``read_into``) go
into the caller's reused buffer in 1 MiB pieces, two in flight.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbd

from ..errors import HypervisorError

MAX_REQUEST = 32 << 20
# read_into's requests: QEMU's NBD server allocates a fresh buffer per request, and at 4 MiB it spent 1.2-1.7
# CPU-seconds serving this machine's bench disk against 0.5-0.8 in 1 MiB pieces (docs/performance.md), CPU the
# backup itself needs on 2 cores; two in flight keep the socket busy
PIECE = 1 << 20
PIPELINE = 2
STATUS_SPAN = 1 << 30          # ask block status for at most this much at once
ALLOC_ZERO = 2                 # base:allocation flag: reads as zeros
BITMAP_DIRTY = 1               # qemu:dirty-bitmap flag: changed


@dataclass(frozen=True)
class Extent:
    offset: int
    length: int
    flag: int


class ExportReader:
    """A read-only libnbd connection to one export of QEMU's NBD server."""

    def __init__(self, socket: Path, export: str, bitmap: str | None = None) -> None:
        self.socket = socket
        self.export = export
        self.bitmap_ctx = f"qemu:dirty-bitmap:{bitmap}" if bitmap else None
        self._lock = threading.Lock()       # one user of the handle's replies at a time (read_into, pread)
        self.h = nbd.NBD()
        self.h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        if self.bitmap_ctx:
            self.h.add_meta_context(self.bitmap_ctx)
        uri = f"nbd+unix:///{urllib.parse.quote(export)}?socket={socket}"
        try:
            self.h.connect_uri(uri)
        except nbd.Error as exc:
            raise HypervisorError(f"cannot open NBD export {export!r} at {socket}: {exc}") from exc
        if self.bitmap_ctx and not self.h.can_meta_context(self.bitmap_ctx):
            raise HypervisorError(f"NBD export {export!r} does not offer dirty bitmap context {self.bitmap_ctx}")

    def size(self) -> int:
        return int(self.h.get_size())

    def extents(self, context: str, offset: int = 0, length: int | None = None) -> list[Extent]:
        """Block status of ``context`` over [offset, offset+length), as contiguous extents."""
        end = self.size() if length is None else offset + length
        out: list[Extent] = []
        pos = offset
        while pos < end:
            got: list[Extent] = []

            def cb(meta: str, off: int, entries: list[int], err: Any) -> int:
                if meta == context:
                    o = off
                    for i in range(0, len(entries), 2):
                        got.append(Extent(o, entries[i], entries[i + 1]))
                        o += entries[i]
                return 0
            try:
                with self._lock:
                    self.h.block_status(min(STATUS_SPAN, end - pos), pos, cb)
            except nbd.Error as exc:
                raise HypervisorError(f"NBD block status of {self.export!r} failed: {exc}") from exc
            if not got:
                raise HypervisorError(f"NBD server sent no {context} status for {self.export!r} at {pos}")
            for e in got:
                length_ = min(e.length, end - e.offset)
                if length_ > 0:
                    out.append(Extent(e.offset, length_, e.flag))
            pos = got[-1].offset + got[-1].length
        return _merge(out)

    def zero_extents(self) -> list[Extent]:
        return [e for e in self.extents(nbd.CONTEXT_BASE_ALLOCATION) if e.flag & ALLOC_ZERO]

    def dirty_extents(self) -> list[Extent]:
        assert self.bitmap_ctx
        return [e for e in self.extents(self.bitmap_ctx) if e.flag & BITMAP_DIRTY]

    def pread(self, offset: int, length: int) -> bytes:
        with self._lock:                # never beside read_into, which would wait for a reply this call consumed
            return self._pread(offset, length)

    def _pread(self, offset: int, length: int) -> bytes:
        parts: list[bytes] = []
        pos = offset
        try:
            while pos < offset + length:
                n = min(MAX_REQUEST, offset + length - pos)
                parts.append(self.h.pread(n, pos))
                pos += n
        except nbd.Error as exc:
            raise HypervisorError(f"NBD read of {self.export!r} at {pos} failed: {exc}; did the VM exit?") from exc
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_into(self, buf: bytearray | memoryview, offset: int, length: int) -> None:
        """Fill ``buf[:length]`` from ``offset``, in pieces of PIECE, up to PIPELINE of them in flight: into the
        caller's buffer (``pread`` returns a fresh one, slow memory here), and in pieces QEMU serves cheaply. One
        thread at a time per connection, since the waiting thread runs the handle's replies."""
        view = memoryview(buf)[:length]
        if len(view) < length:
            raise ValueError(f"a buffer of {len(view)} bytes cannot take a read of {length}")
        pending: deque[tuple[int, nbd.Buffer]] = deque()
        with self._lock:
            try:
                pos = 0
                while pos < length or pending:
                    while pos < length and len(pending) < PIPELINE:
                        n = min(PIECE, length - pos)
                        b = nbd.Buffer.from_buffer(view[pos:pos + n])
                        pending.append((self.h.aio_pread(b, offset + pos), b))
                        pos += n
                    cookie, _ = pending.popleft()       # retired by the wait, even when it failed
                    if not self._wait(cookie):
                        raise HypervisorError(f"NBD read of {self.export!r} at {offset}: the server's reply never "
                                              "came; did the VM exit?")
            except nbd.Error as exc:
                raise HypervisorError(f"NBD read of {self.export!r} at {offset} failed: {exc}; did the VM exit?") \
                    from exc
            finally:
                self._drain(pending)

    def _wait(self, cookie: int) -> bool:
        """Run the handle until ``cookie`` is done (and so retired); False if nothing is left in flight that could
        finish it. Raises ``nbd.Error`` if the command failed."""
        while not self.h.aio_command_completed(cookie):
            if self.h.aio_in_flight() == 0:
                return False
            self.h.poll(-1)
        return True

    def _drain(self, pending: deque[tuple[int, nbd.Buffer]]) -> None:
        """After a failed piece, wait out the others still in flight: a reply handled later (by the next read, or
        the shutdown) would land in a buffer its caller has reused. A dead connection has nothing left to deliver."""
        for cookie, _ in pending:
            try:
                self._wait(cookie)
            except nbd.Error:
                pass                    # this one failed too: retired either way

    def close(self) -> None:
        try:
            self.h.shutdown()
        except nbd.Error:
            pass  # the server side is already gone; nothing left to release
        del self.h

    def __enter__(self) -> "ExportReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _merge(extents: list[Extent]) -> list[Extent]:
    out: list[Extent] = []
    for e in extents:
        if out and out[-1].flag == e.flag and out[-1].offset + out[-1].length == e.offset:
            out[-1] = Extent(out[-1].offset, out[-1].length + e.length, e.flag)
        else:
            out.append(e)
    return out
