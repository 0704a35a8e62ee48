"""Advisory locks in ``locks/``: ``flock`` on a file per resource, released by the kernel when the process dies.

Because the kernel drops an ``flock`` with its holder, a lock left by a killed process is never stale: the next
process simply gets it. The file records the holder's pid and command for the error message of the one refused.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import LockedError


@contextmanager
def hold(path: Path, what: str, *, shared: bool = False) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise LockedError(f"{what} is busy: {holder} holds {path.name}; wait for it to finish") from None
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} ({' '.join(_argv())})\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _argv() -> list[str]:
    try:
        return Path("/proc/self/cmdline").read_bytes().decode(errors="replace").split("\0")[:6]
    except OSError:
        return []
