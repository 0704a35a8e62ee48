"""Advisory locks in ``locks/``: ``flock`` on a file per resource, released by the kernel when the process dies.

Because the kernel drops an ``flock`` with its holder, a lock left by a killed process is never stale: the next
process simply gets it. Who holds a busy lock is read from ``/proc/locks`` (live holders only), never from what a
file says, so text left in a lock file by a dead process cannot mislead the message of the one refused.

Running backups also *register* (``locks/writer-<pid>-<random>.lock``): a file created under a temporary name,
locked, stamped with its start (the file's own mtime, i.e. the clock that chunk mtimes use) and only then renamed into
place, so anything that sees a registration sees it locked. Garbage collection reads registrations to know how old
the oldest running backup is. A registration whose lock can be taken belongs to a dead process: it is removed
(while locked, so no live writer is affected).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import LockedError

WRITER_PREFIX = "writer-"
DEFAULT_GRACE = 600.0        # gc.py: seconds taken off its cutoff (gc's or the oldest writer's start): clock steps


@contextmanager
def hold(path: Path, what: str, *, shared: bool = False) -> Iterator[None]:
    """Take ``path``'s flock at once or raise ``LockedError`` naming the live holder(s)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(f"{what} is busy: {holders(fd)} holds {path.name}; wait for it to finish and "
                              "retry") from None
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} ({describe(os.getpid())})\n".encode(), 0)
        try:
            yield
        finally:
            if not shared:
                os.ftruncate(fd, 0)     # a dead holder's text is harmless, but a clean release leaves none
    finally:
        os.close(fd)


def in_use(path: Path) -> bool:
    """Whether any process holds a flock (shared or exclusive) on ``path``. Read from /proc/locks, not by trying a
    lock: an exclusive try, however short, would make a shared locker that comes at that moment fail."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    pids = _flock_pids(st)
    if pids is not None:
        return bool(pids)
    fd = os.open(path, os.O_RDONLY)         # no /proc/locks: fall back to trying
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _flock_pids(st: os.stat_result) -> list[int] | None:
    """The pids /proc/locks names for flocks on the file ``st`` describes (the process that took each lock, which
    may have exited while a child it forked still holds it); None when /proc/locks cannot be read."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    pids: list[int] = []
    for line in lines:
        f = line.split()
        if len(f) < 6 or f[1] == "->" or f[1] != "FLOCK":
            continue
        try:
            maj, mnr, ino = f[5].split(":")
            if int(ino) == st.st_ino and os.makedev(int(maj, 16), int(mnr, 16)) == st.st_dev:
                pids.append(int(f[4]))
        except ValueError:
            continue
    return pids


def holders(fd: int) -> str:
    """Live processes holding a flock on the file open as ``fd``, from /proc/locks; 'another process' if unknown."""
    pids = [p for p in _flock_pids(os.fstat(fd)) or [] if p != os.getpid()]
    if not pids:
        return "another process"
    return ", ".join(f"pid {p} ({describe(p)})" for p in sorted(set(pids))[:3])


def describe(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "exited"
    argv = [a for a in argv if a]
    # python -m cutpoint.cli.main backup x  ->  cutpoint backup x
    for i, a in enumerate(argv):
        if a.endswith("cutpoint") or a == "cutpoint.cli.main":
            return " ".join(["cutpoint"] + argv[i + 1:i + 5])
    return " ".join(argv[:5]) or "?"


# -- running writers -------------------------------------------------------------------------------------------------

@dataclass
class Writer:
    path: Path
    start: float           # the registration file's mtime: the filesystem clock at registration
    what: str

    @property
    def relied(self) -> Path:
        """Format v4: the packs this backup deduplicated against, one id per line (``PackStore._rely``). A file of
        its own: appending to the registration would move its mtime, which is the backup's start for gc."""
        return relied_path(self.path)


def relied_path(registration: Path) -> Path:
    return registration.with_name(registration.name + ".packs")


@contextmanager
def register_writer(locks_dir: Path, what: str) -> Iterator[Writer]:
    """Announce a running backup to gc for as long as the context lasts (see module doc)."""
    locks_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    running_writers(locks_dir)                       # clears registrations of dead processes
    name = f"{WRITER_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.lock"
    tmp = locks_dir / f".tmp-{name}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{what}\n".encode())
        os.fsync(fd)
        os.rename(tmp, locks_dir / name)
        w = Writer(locks_dir / name, os.fstat(fd).st_mtime, what)
        try:
            yield w
        finally:
            w.relied.unlink(missing_ok=True)
            w.path.unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)


def running_writers(locks_dir: Path) -> list[Writer]:
    """Registrations of live backups; those of dead processes are removed on the way."""
    out: list[Writer] = []
    if not locks_dir.exists():
        return out
    for p in sorted(locks_dir.glob(f"{WRITER_PREFIX}*.lock")):
        try:
            fd = os.open(p, os.O_RDONLY)
        except FileNotFoundError:
            continue                                  # finished meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                st = os.fstat(fd)
                out.append(Writer(p, st.st_mtime, os.pread(fd, 200, 0).decode(errors="replace").strip()))
                continue
            relied_path(p).unlink(missing_ok=True)    # lock free: its process is gone
            p.unlink(missing_ok=True)
        finally:
            os.close(fd)
    for p in locks_dir.glob(f".tmp-{WRITER_PREFIX}*"):   # died while registering; a live one renames in µs
        try:
            if time.time() - p.stat().st_mtime > 60:
                p.unlink()
        except FileNotFoundError:
            pass
    return out
