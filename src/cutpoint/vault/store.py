"""What every reader of chunks needs from a vault's store, whichever format: v2/v3 ``ChunkStore`` (a file per
chunk) or v4 ``PackStore`` (packs and an index). Restore, verify and replace are written against this."""

from __future__ import annotations

from typing import Protocol


class ChunkSource(Protocol):
    def chunk_id(self, data: bytes) -> str: ...

    def get(self, cid: str, expect: int | None = None) -> bytes: ...

    def get_many(self, cids: list[str], expects: list[int]) -> list[bytes]:
        """``get`` of each, reading adjacent stored chunks together where the format keeps them together."""
        ...

    def has(self, cid: str) -> bool: ...

    def state(self, cid: str) -> str:
        """'ok', 'bad' (found damaged by a verify) or 'missing'."""
        ...

    def stored_size(self, cid: str) -> int: ...

    def mark_bad(self, cid: str) -> bool: ...
