"""A worker's run buffer costs memory only where runs reach: an incremental's 64 KiB runs must not fault in (and
zero) the 4 MiB a full backup's runs need, on every worker thread of every backup process (fresh memory is the
slow kind here)."""

from __future__ import annotations

import ctypes
import mmap
import threading
from pathlib import Path

from cutpoint.backup import treechunker

_libc = ctypes.CDLL(None, use_errno=True)
PAGE = mmap.PAGESIZE


def resident(view: memoryview) -> int:
    """Pages of the memory under ``view`` that are resident (mincore)."""
    start = ctypes.addressof(ctypes.c_char.from_buffer(view)) // PAGE * PAGE
    end = ctypes.addressof(ctypes.c_char.from_buffer(view[len(view) - 1:]))
    pages = (end - start) // PAGE + 1
    vec = (ctypes.c_ubyte * pages)()
    if _libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(pages * PAGE), vec) != 0:
        raise OSError(ctypes.get_errno(), "mincore")
    return sum(b & 1 for b in vec)


def test_a_64k_run_touches_64k_of_the_run_buffer() -> None:
    got: list[int] = []

    def worker() -> None:                     # a fresh thread: its own, new buffer
        run = treechunker._run_buffer(64 << 10)
        run[:] = b"\x5a" * len(run)           # what a read into it does
        whole = treechunker._local.buf
        assert len(whole) >= treechunker.RUN_BYTES
        got.append(resident(whole))
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    always = thp.exists() and "[always]" in thp.read_text()
    limit = (2 << 20) // PAGE if always else (64 << 10) // PAGE + 1     # a huge page, at most, where THP is always
    assert got and got[0] <= limit, f"{got[0]} pages resident of a 4 MiB buffer for a 64 KiB run"
