"""One blob of a format v4 pack: a chunk of disk data or a node of a point's index tree (docs/format.md §18).

A blob's id is keyed BLAKE3 of its decoded bytes, one key per kind (``Sealer.blob_key``); the id is computed once on
the way in and checked once on the way out, and that check is what authenticates an unencrypted blob. The payload
is a codec byte and the body. Compression is chosen per blob: a blob is stored compressed (zstd level 1) only if
that saves at least 1/16. After an incompressible blob, the thread *probes* the next one (compresses its first
4 KiB) before compressing all of it: data comes in runs of one kind, so random or already compressed data costs a
4 KiB probe per chunk and compressible data no probe at all (measured: a probe costs 13 µs, a 64 KiB compression
112 µs on binaries and 14 µs on random data; docs/performance.md).
"""

from __future__ import annotations

import threading

import blake3
import zstandard

from ..errors import IntegrityError
from . import codec
from .crypto import Sealer

MAGIC = b"CPB4"
DATA, NODE = 0, 1
KINDS = (DATA, NODE)
CODEC_STORED, CODEC_ZSTD = 0, 1
PROBE = 4096
ID_SIZE = 32
_CODEC_BYTE = {CODEC_STORED: b"\x00", CODEC_ZSTD: b"\x01"}


class BlobCodec:
    """Ids, encoding and decoding of blobs for one vault; safe to share between threads."""

    def __init__(self, sealer: Sealer, max_size: int, level: int = 1) -> None:
        self.sealer = sealer
        self.max_size = max_size
        self.level = level
        self._keys = {k: sealer.blob_key(k) for k in KINDS}
        self._local = threading.local()

    def blob_id(self, data: bytes | memoryview, kind: int = DATA) -> bytes:
        return blake3.blake3(data, key=self._keys[kind]).digest()

    def _zstd(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "c", None)
        if c is None:                    # one compressor per thread: its context (and memory) is reused
            c = self._local.c = zstandard.ZstdCompressor(level=self.level)
        return c

    def encode(self, bid: bytes, data: bytes | memoryview, kind: int = DATA) -> tuple[bytes | memoryview, ...]:
        """The stored blob, as pieces to copy into a pack one after another; a piece may be ``data`` itself (a
        chunk stored uncompressed and unencrypted), so it is valid only as long as ``data`` is."""
        c = self._zstd()
        local = self._local
        codec, body = CODEC_STORED, data
        # probe only after an incompressible chunk on this thread: data comes in runs of one kind, so compressible
        # streams pay no probe and random streams pay a 4 KiB probe instead of a whole compression
        if not getattr(local, "incompressible", False) or len(data) <= PROBE \
                or len(c.compress(data[:PROBE])) < PROBE - PROBE // 16:
            packed = c.compress(data)
            if len(packed) < len(data) - len(data) // 16:
                codec, body = CODEC_ZSTD, packed
        local.incompressible = codec == CODEC_STORED
        return self.sealer.seal_blob_parts(MAGIC, _CODEC_BYTE[codec], body, _aad(kind, bid))

    def decode(self, bid: bytes, blob: bytes | memoryview, kind: int, expect: int | None = None) -> bytes:
        """The checked bytes of a blob: damage, a misplaced blob or a wrong length raise ``IntegrityError``."""
        what = f"{'chunk' if kind == DATA else 'index node'} {bid.hex()}"
        limit = self.max_size if expect is None else min(expect, self.max_size)
        payload = self.sealer.unseal_blob(MAGIC, blob, _aad(kind, bid), what)
        if not len(payload):
            raise IntegrityError(f"{what} is damaged: empty payload")
        body = memoryview(payload)[1:]
        if payload[0] == CODEC_STORED:
            if len(body) > limit:
                raise IntegrityError(f"{what} is damaged: {len(body)} bytes, more than it may hold")
            data = bytes(body)
        elif payload[0] == CODEC_ZSTD:
            data = codec.decompress(body, limit, what)
        else:
            raise IntegrityError(f"{what} is damaged: unknown codec {payload[0]}")
        if expect is not None and len(data) != expect:
            raise IntegrityError(f"{what} has {len(data)} bytes where {expect} are expected")
        if self.blob_id(data, kind) != bid:
            raise IntegrityError(f"{what} is damaged: its content does not match its id")
        return data


def _aad(kind: int, bid: bytes) -> bytes:
    return bytes([kind]) + bid
