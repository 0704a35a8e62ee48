"""The C heap's thresholds while a backup reads: freed memory is kept for reuse instead of handed back.

Fresh memory is slow here: first touch runs at about 270 MiB/s (the host reclaims freed guest pages), against
tens of GB/s for reused memory (docs/performance.md). A backup frees and allocates the same sizes all the time (a
chunk's encoded copy, its sealed blob), and glibc's default thresholds (128 KiB, raised only as large blocks are
freed) hand those pages back and fault them in again: with reads into reused buffers instead of a fresh 4 MiB per
read, which had been raising the thresholds by accident, the backup took 71-88k page faults instead of 34-45k.
Inside ``kept()`` blocks of up to 4 MiB come from the heap and up to 16 MiB of free heap is kept: 29-36k faults,
peak RSS 118-142 MiB. 32 and 64 MiB were no faster and took up to 193 MiB; 1 and 8 MiB were as fast into a local
vault but cost a backup into S3 a CPU-second more (the S3 client's blocks of 1-4 MiB were mapped afresh each time).
When the last user leaves, the free heap goes back (``malloc_trim``) and the trim threshold to glibc's initial
128 KiB, so a long-lived service does not keep a backup's peak. The mmap threshold stays: glibc stops adjusting it
for good once it is set, and 4 MiB is about where its own adjustment ends up after such work. Not glibc, or malloc
tuned by the user (``MALLOC_*_``, ``GLIBC_TUNABLES``): nothing is changed.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # mallopt parameters (malloc.h)
KEPT_MMAP = (4 << 20) + 1                       # blocks of up to 4 MiB from the heap, larger ones mapped
KEPT_TRIM = 16 << 20                            # free heap kept before any is handed back
DEFAULT = 128 << 10                              # glibc's initial trim threshold

_lock = threading.Lock()
_users = 0


def _libc() -> Any:
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ) or \
            "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return None                     # the user's own malloc settings win
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


@contextmanager
def kept() -> Iterator[None]:
    """Freed memory stays in the process for the block's duration (nested and concurrent blocks share it)."""
    global _users
    with _lock:
        _users += 1
        if _users == 1 and _LIBC is not None:
            _LIBC.mallopt(M_MMAP_THRESHOLD, KEPT_MMAP)
            _LIBC.mallopt(M_TRIM_THRESHOLD, KEPT_TRIM)
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _LIBC is not None:
                _LIBC.mallopt(M_TRIM_THRESHOLD, DEFAULT)
                _LIBC.malloc_trim(0)
