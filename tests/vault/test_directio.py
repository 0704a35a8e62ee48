"""Large objects (packs) go to the device past the page cache, byte-exact whatever their length, and fall back to the
page cache where the filesystem refuses ``O_DIRECT``."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

import pytest

from cutpoint.vault import directio
from cutpoint.vault.backend import LocalBackend

_libc = ctypes.CDLL(None, use_errno=True)
PAGE = mmap.PAGESIZE


def resident_pages(path: Path) -> int:
    """How many of the file's pages are in the page cache (mincore of an untouched private mapping)."""
    size = path.stat().st_size
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as m:
        pages = (size + PAGE - 1) // PAGE
        vec = (ctypes.c_ubyte * pages)()
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        if _libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        n = sum(b & 1 for b in vec)
        del addr
        return n


def direct_supported(d: Path) -> bool:
    probe = d / ".probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True


@pytest.mark.parametrize("length", [1, directio.ALIGN - 1, directio.ALIGN, directio.ALIGN + 1, directio.PIECE,
                                    3 * directio.PIECE + 12345])
@pytest.mark.parametrize("where", ["disk", "shm"])
def test_write_all_is_byte_exact(tmp_path: Path, length: int, where: str) -> None:
    d = tmp_path if where == "disk" else Path("/dev/shm")
    path = d / f"cp-directio-{os.getpid()}-{length}"
    data = os.urandom(length)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        directio.write_all(fd, memoryview(data)[0:])
        os.close(fd)
        assert path.read_bytes() == data
    finally:
        path.unlink()


def test_a_pack_does_not_fill_the_page_cache(tmp_path: Path) -> None:
    if not direct_supported(tmp_path):
        pytest.skip(f"{tmp_path} refuses O_DIRECT: nothing to check here")
    b = LocalBackend(tmp_path / "store")
    data = bytearray(os.urandom(16 << 20) + b"tail")
    b.put("data/ab/pack", memoryview(data))
    pack = tmp_path / "store" / "data/ab/pack"
    resident = resident_pages(pack)          # before anything reads it back
    assert resident <= 1, f"{resident} of {(len(data) + PAGE - 1) // PAGE} pages went through the page cache"
    assert b.get("data/ab/pack") == data


def test_small_objects_still_written_whole(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "store")
    b.put("index/one", b"x" * 1000)
    assert b.get("index/one") == b"x" * 1000


def test_a_pack_buffer_is_written_without_a_staging_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pack is assembled in page-aligned memory, so it goes to the device as it is; only other data is copied
    into the thread's aligned buffer first (a memcpy with the GIL held)."""
    if not direct_supported(tmp_path):
        pytest.skip(f"{tmp_path} refuses O_DIRECT: nothing to check here")
    from cutpoint.vault.crypto import Sealer
    from cutpoint.vault.packfile import PackBuffer, parse_trailer

    def no_staging() -> mmap.mmap:
        raise AssertionError("the pack was copied into the staging buffer")
    monkeypatch.setattr(directio, "_buffer", no_staging)
    sealer = Sealer(None, encrypt=False)
    buf = PackBuffer(4 << 20)
    blobs = [os.urandom(n) for n in (70_000, 1 << 20, 3 << 20, 12345)]
    for k, b in enumerate(blobs):
        buf.add(0, bytes([k]) * 32, b, len(b))
    b = LocalBackend(tmp_path / "store")
    view = buf.finish(sealer)
    b.put("data/ab/pack", view)
    assert resident_pages(tmp_path / "store" / "data/ab/pack") <= 1      # before anything reads it back
    got = b.get("data/ab/pack")
    assert got == bytes(view)
    entries = parse_trailer(sealer, buf.pid, got, len(got))
    assert [got[e.offset:e.offset + e.length] for e in entries] == blobs
    with pytest.raises(AssertionError, match="staging"):
        b.put("data/ab/other", bytes(view))           # read-only bytes: staged, as before


def test_a_pack_buffer_grows_past_its_reserve(tmp_path: Path) -> None:
    """A blob larger than the room kept past the target (a 64 MiB chunk, a long trailer) moves the pack to a larger
    mapping with its bytes so far; a view of the old one (a pack still being written) stays valid."""
    from cutpoint.vault.crypto import Sealer
    from cutpoint.vault.packfile import PackBuffer, parse_trailer
    sealer = Sealer(None, encrypt=False)
    buf = PackBuffer(64 << 10, room=4096)
    first = os.urandom(60_000)
    buf.add(0, b"\x01" * 32, first, len(first))
    old = memoryview(buf.buf)
    big = os.urandom(300_000)
    buf.add(0, b"\x02" * 32, big, len(big))
    assert bytes(old[:len(first)]) == first
    old.release()
    whole = bytes(buf.finish(sealer))
    entries = parse_trailer(sealer, buf.pid, whole, len(whole))
    assert [whole[e.offset:e.offset + e.length] for e in entries] == [first, big]
    assert buf.read(entries[1].offset, 10) == big[:10]
