"""Restoring a point to image files, without a VM: every chunk written where it belongs, whichever way it is written
(``O_DIRECT`` from an aligned buffer, or through the page cache), zeros left as holes, a short last chunk, repeats."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cutpoint.catalog.db import VmRecord
from cutpoint.errors import CutpointError
from cutpoint.restore import images
from cutpoint.restore.images import restore_point
from cutpoint.vault import tree
from cutpoint.vault.blob import DATA
from cutpoint.vault.manifest import FORMAT_TREE, DiskManifest, Manifest
from tests.vault.util import open_vault

KiB = 1 << 10


def _point(chunks: list[bytes | None], size: int) -> Manifest:
    """Commit a one-disk point of ``size`` bytes made of ``chunks`` (None: zeros), as a backup does."""
    v = open_vault()
    v.catalog.add_vm(VmRecord("v", "qmp", "/x", datetime.now(timezone.utc).isoformat(), {}))
    ids: list[bytes | None] = [None if c is None else v.chunks.put_blob(c, DATA)[0] for c in chunks]
    leaves = [tree.store_leaf(v.chunks, ids[j:j + v.fanout])[0] for j in range(0, len(ids), v.fanout)]
    top, height, _ = tree.build(v.chunks, leaves, len(ids), v.fanout)
    m = Manifest(point="20260101T000000Z-0001", vm="v", created="2026-01-01T00:00:00.000Z",
                 chunk_size=v.chunk_size, format=FORMAT_TREE, fanout=v.fanout,
                 disks=[DiskManifest("d", size, [], tree=top.hex() if top else None, tree_height=height)])
    v.commit_point(m, {})
    v.close()
    return m


def _disk() -> tuple[list[bytes | None], int, bytes]:
    cs = 64 * KiB
    chunks: list[bytes | None] = []
    for i in range(150):                          # random, zeros between, a repeat, and a short last chunk
        chunks.append(None if i % 40 in (3, 4, 5) else chunks[10] if i == 90 else os.urandom(cs))
    chunks.append(os.urandom(1000))
    size = 150 * cs + 1000
    return chunks, size, b"".join(c or bytes(cs) for c in chunks)


@pytest.mark.parametrize("direct", [True, False], ids=["o_direct", "page_cache"])
def test_an_image_comes_back_byte_identical_and_sparse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       direct: bool) -> None:
    chunks, size, want = _disk()
    m = _point(chunks, size)
    used: list[bool] = []
    real = images._direct_fd

    def direct_fd(fd: int) -> int | None:
        got = real(fd) if direct else None
        used.append(got is not None)
        return got

    monkeypatch.setattr(images, "_direct_fd", direct_fd)
    v = open_vault()
    [f] = restore_point(v, v.manifest(v.catalog.point("v", m.point)), tmp_path / "out")
    v.close()
    assert f.path.read_bytes() == want and f.path.stat().st_size == size
    assert os.stat(f.path).st_blocks * 512 < size - 10 * 64 * KiB         # the zero chunks are holes
    assert oct(f.path.stat().st_mode & 0o777) == "0o600"
    assert used == [direct] or (direct and used == [False])                # a filesystem may refuse O_DIRECT


def test_a_short_write_goes_on_and_a_full_disk_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pwrite may write less than asked (a disk filling up): the rest is written, or the error it meets raised;
    an image is never renamed into place with a stretch missing."""
    chunks, size, want = _disk()
    m = _point(chunks, size)
    real_pwrite, real_pwritev = os.pwrite, os.pwritev
    calls = {"n": 0}

    def short_pwrite(fd: int, data, at: int) -> int:          # type: ignore[no-untyped-def]
        calls["n"] += 1
        return real_pwrite(fd, memoryview(data)[:len(data) // 2 // 4096 * 4096 or len(data)], at)

    def short_pwritev(fd: int, bufs, at: int) -> int:          # type: ignore[no-untyped-def]
        return real_pwrite(fd, bufs[0], at)                   # only the first chunk of the stretch

    monkeypatch.setattr(images.os, "pwrite", short_pwrite)
    monkeypatch.setattr(images.os, "pwritev", short_pwritev)
    v = open_vault()
    rec = v.catalog.point("v", m.point)
    [f] = restore_point(v, v.manifest(rec), tmp_path / "short")
    assert f.path.read_bytes() == want and calls["n"] > 0

    def full(fd: int, data, at: int) -> int:                  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(images.os, "pwrite", full)
    monkeypatch.setattr(images.os, "pwritev", lambda fd, bufs, at: 0)
    with pytest.raises(CutpointError, match="No space left"):
        restore_point(v, v.manifest(rec), tmp_path / "full")
    v.close()
    assert not any((tmp_path / "full").iterdir())
    monkeypatch.setattr(images.os, "pwrite", real_pwrite)
    monkeypatch.setattr(images.os, "pwritev", real_pwritev)


def test_a_filesystem_refusing_direct_writes_gets_them_through_the_page_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Some filesystems open a file with O_DIRECT and then refuse the writes (EINVAL): the restore goes on without."""
    import errno
    import fcntl

    chunks, size, want = _disk()
    m = _point(chunks, size)
    real_pwrite = os.pwrite
    refused: list[int] = []

    def pwrite(fd: int, data, at: int) -> int:                # type: ignore[no-untyped-def]
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(at)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, at)

    monkeypatch.setattr(images.os, "pwrite", pwrite)
    v = open_vault()
    [f] = restore_point(v, v.manifest(v.catalog.point("v", m.point)), tmp_path / "out")
    v.close()
    assert f.path.read_bytes() == want
    assert len(refused) <= 8                                  # at most one refusal per worker, then no more tries
