"""gc reads the trailer of every file in ``data/`` that no index lists (to adopt a pack whose index object was
lost), and rebuild-index every pack's. A planted file whose last 8 bytes claimed a 4 GiB trailer was read that
long into memory before anything was authenticated (a sparse plant costs its writer 4 KiB of disk). A trailer
longer than any pack's is now refused unread."""

from __future__ import annotations

import struct

import pytest

from cutpoint.errors import IntegrityError
from cutpoint.vault import packrebuild
from cutpoint.vault.packfile import END_MAGIC, MAX_TRAILER, pack_id_of
from tests.vault.util import open_vault


def test_a_planted_pack_claiming_a_huge_trailer_is_refused_unread() -> None:
    v = open_vault()
    claim = MAX_TRAILER + 1
    name = "ab" * 32
    path = v.root / "data" / "ab" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:                       # sparse: the claim costs nothing on disk
        f.truncate(claim + 8)
        f.seek(claim)
        f.write(struct.pack("<I4s", claim, END_MAGIC))
    info = next(i for i in v.backend.list("data/") if i.name.endswith(name))
    reads: list[int] = []
    get = v.backend.get

    def counted(n: str, offset: int = 0, length: int | None = None) -> bytes:
        data = get(n, offset, length)
        reads.append(len(data))
        return data

    v.backend.get = counted                           # type: ignore[method-assign]
    with pytest.raises(IntegrityError, match="no trailer"):
        packrebuild.read_trailer(v.backend, v.sealer, pack_id_of(info.name), info)
    assert max(reads) <= 8, reads
    v.close()
