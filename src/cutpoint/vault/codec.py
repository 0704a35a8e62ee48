"""zstd decompression with an output bound: a chunk or manifest file is untrusted input, and a small zstd frame can
claim (or produce) gigabytes. The frame header's declared size is checked first, then output is pulled in pieces and
the read stops one byte past the bound, so memory never exceeds the bound whatever the frame says."""

from __future__ import annotations

import threading

import zstandard

from ..errors import IntegrityError

_PIECE = 1 << 20
_local = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor (each call starts afresh): making one per chunk allocated a context every time,
    about a fifth of the cost of decompressing the 64 KiB chunk (5% of a restore's CPU in ``Decompressor_init``)."""
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def decompress(body: bytes | memoryview, limit: int, what: str) -> bytes:
    """The decompressed ``body``, at most ``limit`` bytes; more (or a broken frame) raises ``IntegrityError``."""
    try:
        declared = zstandard.frame_content_size(body)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"{what} is damaged: {exc}") from exc
    if declared > limit:
        raise IntegrityError(f"{what} is damaged: it decompresses to {declared} bytes, more than the {limit} it "
                             "may hold")
    if declared >= 0:            # the usual case (our own frames): one allocation of the declared, bounded size
        try:
            return _decompressor().decompress(body, max_output_size=limit)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{what} is damaged: {exc}") from exc
    out = bytearray()
    try:
        with zstandard.ZstdDecompressor().stream_reader(bytes(body), read_across_frames=True) as r:
            while len(out) <= limit:
                piece = r.read(min(_PIECE, limit + 1 - len(out)))
                if not piece:
                    break
                out += piece
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"{what} is damaged: {exc}") from exc
    if len(out) > limit:
        raise IntegrityError(f"{what} is damaged: it decompresses to more than the {limit} bytes it may hold")
    return bytes(out)
