"""Files and processes of a restore that must stay private to the restoring user.

Restored images hold a VM's whole disk; ``start.sh``/``vm.json`` hold its command line (which can carry secrets);
the vault passphrase must never reach a restored VM's processes. So: directories 0700 and files 0600 whatever the
umask, created with ``O_EXCL|O_NOFOLLOW`` (a symlink planted at the path is refused, never followed), and child
processes get an environment without ``$CUTPOINT_PASSPHRASE(_FILE)``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import CutpointError, UsageError

SECRET_ENV = ("CUTPOINT_PASSPHRASE", "CUTPOINT_PASSPHRASE_FILE")
UMASK = 0o077


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the vault's secrets, for QEMU, qemu-img, qemu-nbd and nbdkit."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env.update(extra or {})
    return env


def makedirs(d: Path) -> Path:
    """Create ``d`` and any missing parents 0700 (existing ones are left as they are)."""
    missing = []
    p = d
    while not os.path.lexists(p):
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            continue
        except OSError as exc:
            raise CutpointError(f"cannot create directory {p}: {exc.strerror or exc}") from exc
        os.chmod(p, 0o700)
    if not d.is_dir():
        raise UsageError(f"{d} is not a directory")
    return d


def make_private_dir(d: Path) -> None:
    """``d`` (new or empty, ours) becomes 0700."""
    makedirs(d)
    st = d.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{d} is not a directory")
    os.chmod(d, 0o700)


def refuse_planted(path: Path, *, stale_ok: bool = False) -> None:
    """Nothing may sit at a path a restore is about to create; a leftover regular file of an interrupted restore
    (``stale_ok``) is removed, a symlink or anything else is refused and left alone."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stale_ok and stat.S_ISREG(st.st_mode):
        path.unlink()
        return
    kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "in the way"
    raise UsageError(f"{path} already exists ({kind}); it was not touched: remove it, or restore somewhere else")


def create(path: Path, mode: int = 0o600, flags: int = os.O_RDWR) -> int:
    """A new file at ``path``, exactly ``mode``, never through a symlink; returns its descriptor."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except FileExistsError:
        raise UsageError(f"{path} already exists (it was not touched); remove it, or restore somewhere "
                         "else") from None
    except OSError as exc:
        raise CutpointError(f"cannot create {path}: {exc.strerror or exc}") from exc
    os.fchmod(fd, mode)
    return fd


def write(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd = create(path, mode, os.O_WRONLY)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(fd)
    finally:
        os.close(fd)


def open_log(path: Path) -> int:
    """A process's log file (truncated if it is ours from an earlier start), 0600, never through a symlink."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CutpointError(f"cannot create {path}: {exc.strerror or exc}") from exc
    os.fchmod(fd, 0o600)
    return fd
