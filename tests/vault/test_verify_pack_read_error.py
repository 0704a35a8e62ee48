"""A pack that cannot be read (EIO from a bad sector) during verify --read-data: its chunks are reported as
unreadable, naming the pack, and verify goes on to check every other chunk, instead of ending with an OSError."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from cutpoint.vault.packfile import pack_name
from tests.vault.util import add_vm, backup, chunk_of, drive_args, open_vault, vault_dir, vault_of_format, verified


def test_verify_reports_an_eio_pack_and_checks_the_rest(bare_qemu, tmp_path: Path, monkeypatch) -> None:
    vault_of_format(4, monkeypatch)
    disk = tmp_path / "random.raw"
    disk.write_bytes(os.urandom(40 << 20))       # stored as it is: three packs of 16 MiB
    vm = bare_qemu(drive_args(disk, "da", "raw"), name="v")
    add_vm("v", vm.qmp)
    p1 = backup()["point"]
    clean = verified()
    assert clean.ok
    v = open_vault()
    pid = v.chunks.location(chunk_of(p1, "da", 40)).pid
    chunks = next(d for d in v.manifest(v.catalog.point("v", p1)).disks if d.name == "da").chunks
    in_pack = {c for c in chunks if c is not None and v.chunks.location(c).pid == pid}    # type: ignore[union-attr]
    pack_bytes = sum(v.chunks.location(c).raw_length for c in in_pack)                # type: ignore[union-attr]
    v.close()
    assert 0 < len(in_pack) < len(set(chunks))
    bad_path = str(vault_dir() / pack_name(pid))
    real = os.pread

    def failing(fd: int, n: int, off: int) -> bytes:
        if os.readlink(f"/proc/self/fd/{fd}") == bad_path:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd, n, off)
    monkeypatch.setattr(os, "pread", failing)
    rep = verified()
    assert not rep.ok
    assert {c.id for c in rep.damaged_chunks} == in_pack     # that pack's chunks, each named
    assert all(f"cannot read vault object {pack_name(pid)}" in c.problem for c in rep.damaged_chunks)
    assert rep.chunks_checked == clean.chunks_checked                    # every other chunk still checked
    assert rep.bytes_read == clean.bytes_read - pack_bytes
    assert all(not c.moved_aside for c in rep.damaged_chunks)   # not found damaged: the device failed to read
