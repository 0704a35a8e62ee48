"""verify --read-data of a v4 vault reads each stretch of a pack with one read and decodes on several threads; a
damaged chunk inside a stretch is still named and moved aside, and every other chunk of that stretch is still
checked (the stretch is then checked chunk by chunk)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cutpoint.vault.blob import BlobCodec
from tests.vault.util import add_vm, backup, chunk_of, drive_args, flip_chunk, open_vault, vault_of_format, verified


def test_a_damaged_chunk_inside_a_stretch_read_on_several_threads(bare_qemu, tmp_path: Path, monkeypatch) -> None:
    vault_of_format(4, monkeypatch)
    disk = tmp_path / "random.raw"
    disk.write_bytes(os.urandom(24 << 20))        # 384 distinct chunks, stored as they are: several stretches
    vm = bare_qemu(drive_args(disk, "da", "raw"), name="v")
    add_vm("v", vm.qmp)
    p1 = backup()["point"]
    threads: set[int] = set()
    decode = BlobCodec.decode

    def counted(self, *a, **kw):  # type: ignore[no-untyped-def]
        threads.add(threading.get_ident())
        return decode(self, *a, **kw)
    monkeypatch.setattr(BlobCodec, "decode", counted)
    clean = verified()
    assert clean.ok and clean.chunks_checked > 64
    assert len(threads - {threading.get_ident()}) >= 2, "decoded on one thread"

    cid = chunk_of(p1, "da", 100)
    v = open_vault()
    loc = v.chunks.location(cid)
    stretch = [b for b, other in v.chunks.index().where.items() if other.pid == loc.pid]
    v.close()
    assert len(stretch) > 1                       # others share its pack: the stretch read has more than it
    flip_chunk(cid)
    rep = verified()
    assert [c.id for c in rep.damaged_chunks] == [cid] and rep.damaged_chunks[0].moved_aside
    assert rep.chunks_checked == clean.chunks_checked
    assert rep.bytes_read == clean.bytes_read - loc.raw_length
