"""One drill at a time per host, and nothing left behind by one that was killed.

Every drill lives in its own directory under the work directory's ``.drill`` (overlays, sockets, pidfiles, console,
FUSE views of the filesystem checks). The host lock ``.drill/lock`` (flock) is held for a drill's whole life, so
whoever holds it knows that every other drill directory is a leftover of a drill that died (kill -9, power loss):
``sweep`` stops its processes (only those whose command line names that directory: a recycled pid is never
killed), unmounts its views and removes it. The next drill and ``cutpoint vm cleanup`` both sweep.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import pids
from ..errors import LockedError
from ..paths import work_home
from ..workdir import private_dir
from .launch import read_pid
from .nbdserve import unmount

PIDFILES = ("qemu.pid", "nbd.pid")


def base() -> Path:
    return private_dir("drill")


def present() -> bool:
    """Whether a drill ever used this host's work directory: a sweep with nothing to do must not create it."""
    return (Path(os.path.abspath(work_home())) / ".drill").is_dir()


@contextmanager
def host_lock(wait: float = 0.0) -> Iterator[None]:
    """The host's drill lock; a second drill waits up to ``wait`` seconds, then is refused."""
    fd = os.open(base() / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError("another drill is running on this host (one at a time); wait for it to "
                                      "finish and retry") from None
                time.sleep(0.5)
        yield
    finally:
        os.close(fd)


def sweep() -> list[str]:
    """Remove every drill directory (the caller holds ``host_lock``); returns what it stopped and removed."""
    done: list[str] = []
    root = base()
    for d in sorted(root.iterdir()):
        if d.name == "lock" or d.is_symlink() or not d.is_dir():
            continue
        for pf in PIDFILES:
            pid = read_pid(d / pf)
            if pid and _names(pid, d):
                _kill(pid)
                done.append(f"stopped {pf.split('.')[0]} pid {pid} of {d.name}")
        for mnt in _mounts_under(d):
            try:
                unmount(mnt)
            except Exception:                                  # noqa: BLE001 - lazily detached below
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
            done.append(f"unmounted {mnt}")
        _kill_views(d)
        shutil.rmtree(d, ignore_errors=True)
        done.append(f"removed {d}")
    return done


def _names(pid: int, d: Path) -> bool:
    """True when process ``pid``'s command line names drill directory ``d`` (it is that drill's process)."""
    try:
        return str(d).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _kill(pid: int, timeout: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pids.alive(pid) and time.monotonic() < deadline:     # a zombie that is not our child is gone too
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)


def _kill_views(d: Path) -> None:
    """nbdfuse and nbdkit processes of the drill's filesystem views (their command lines name the view)."""
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid() and _names(int(p.name), d / "views"):
            _kill(int(p.name))


def _mounts_under(d: Path) -> list[Path]:
    out = []
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    prefix = str(d) + "/"
    for line in lines:
        parts = line.split()
        if len(parts) > 1:
            mnt = parts[1].replace("\\040", " ")
            if mnt.startswith(prefix):
                out.append(Path(mnt))
    return sorted(out, reverse=True)

