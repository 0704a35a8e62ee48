"""The storage a vault's objects live in, reduced to what both a directory and an S3 bucket can do.

The vault format is written only through this interface so that the same bytes, names and write order work on a
local directory and on object storage (docs/format.md). Everything above it thinks in *objects*: immutable byte
strings under a ``/``-separated name. Names come from the vault's own rules, but a vault's listing is untrusted input
(anyone who can write the storage can plant names), so every name is checked here against one strict pattern before
it becomes a path or a key.

Durability is a barrier, not a per-object property: ``put`` and ``create`` may return before the bytes are durable,
and ``sync`` makes everything written before it durable. A writer calls ``sync`` once before it writes an object that
references earlier ones (an index, a manifest), which keeps the rule "visible only when everything it references is
durable" while paying for one ``syncfs`` instead of a fsync per file (../docs/performance.md).
"""

from __future__ import annotations

import ctypes
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .. import faults
from ..errors import NotFoundError, RetentionError, VaultError
from .directio import write_all

# Letters, digits, '.', '_', '-' in each part (point ids and VM names have capitals); no empty, '.' or '..' part,
# none starting with '.' (temporaries) or '-'; no leading '/'.
_NAME = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9._-]{0,199})(?:/[A-Za-z0-9_][A-Za-z0-9._-]{0,199}){0,7}")


def check_name(name: str) -> str:
    """``name`` if it is a well-formed object name, else an error naming it (a listing is untrusted)."""
    if not _NAME.fullmatch(name) or any(part in (".", "..") for part in name.split("/")):
        raise VaultError(f"{name!r} is not a valid vault object name (damaged or hostile listing)")
    return name


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int
    mtime: float            # seconds since the epoch, as the storage reports it


class Backend(Protocol):
    """Objects by name. Implementations: ``LocalBackend`` here, the S3 backend in the object-storage work."""

    def put(self, name: str, data: bytes | memoryview) -> None:
        """Write or replace ``name`` atomically: a reader sees the old object or the new one, never a part."""

    def create(self, name: str, data: bytes | memoryview) -> bool:
        """Write ``name`` only if it does not exist; False (and nothing written) if it does."""

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """The object's bytes, or ``length`` of them from ``offset``; ``NotFoundError`` if absent."""

    def exists(self, name: str) -> bool:
        """Whether ``name`` exists now."""

    def stat(self, name: str) -> ObjectInfo:
        """Its size and time without reading it; ``NotFoundError`` if absent."""

    def retained(self, name: str) -> bool:
        """Whether the store would refuse to delete ``name`` now (S3 Object Lock; a directory never does)."""

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose name starts with ``prefix``, in no particular order. Malformed names are skipped."""

    def delete(self, name: str) -> None:
        """Remove ``name``; absent is not an error (deletes are retried after crashes)."""

    def sync(self) -> None:
        """Make every ``put``/``create``/``delete`` before this call durable."""


def delete_unless_retained(backend: Backend, name: str, dry_run: bool = False) -> bool:
    """Delete ``name``; False when the store keeps it under Object Lock retention (S3, docs/format.md §20.5): the
    callers that sweep (gc, soft delete's clean-up) leave it for a run after its retain-until date. ``dry_run``:
    only whether it would go (gc --dry-run)."""
    if dry_run:
        return not backend.retained(name)
    try:
        backend.delete(name)
        return True
    except RetentionError:
        return False


class LocalBackend:
    """A directory. Objects are files under their name; temporaries start with '.' so no listing sees them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def _write_tmp(self, path: Path, data: bytes | memoryview) -> str:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            if len(data) >= DIRECT_MIN:
                write_all(fd, data)       # packs: past the page cache (directio.py says why)
            else:
                with memoryview(data) as view:
                    done = 0
                    while done < len(view):
                        done += os.write(fd, view[done:])
                # a small object (an index object, a marker, a record) is durable before its name: with delayed
                # allocation, another process's fsync could commit the rename while the data is not written, and
                # after a power loss one torn index object stops every load of the vault. Packs (past the page
                # cache) are made durable by the caller's one syncfs.
                os.fsync(fd)
            faults.hit("object-write")  # written under its temporary name, not yet renamed
        except BaseException:
            os.close(fd)
            _unlink(tmp)
            raise
        os.close(fd)
        return tmp

    def put(self, name: str, data: bytes | memoryview) -> None:
        path = self._path(name)
        tmp = self._write_tmp(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            _unlink(tmp)
            raise

    def create(self, name: str, data: bytes | memoryview) -> bool:
        path = self._path(name)
        tmp = self._write_tmp(path, data)
        try:
            os.link(tmp, path)          # atomic and refuses an existing name: the conditional create
            return True
        except FileExistsError:
            return False
        finally:
            _unlink(tmp)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError as e:
            raise NotFoundError(f"vault object {name} is missing") from e
        except OSError as e:
            raise VaultError(f"cannot read vault object {name}: {e.strerror}") from e
        try:
            if length is None:
                length = os.fstat(fd).st_size - offset
            return os.pread(fd, max(length, 0), offset)
        except OSError as e:            # EIO of a bad sector: what it cost is named (verify goes on), not a crash
            raise VaultError(f"cannot read vault object {name}: {e.strerror or e}") from e
        finally:
            os.close(fd)

    def exists(self, name: str) -> bool:
        return os.path.lexists(self._path(name))

    def stat(self, name: str) -> ObjectInfo:
        try:
            st = os.lstat(self._path(name))
        except FileNotFoundError as e:
            raise NotFoundError(f"vault object {name} is missing") from e
        except OSError as e:
            raise VaultError(f"cannot stat vault object {name}: {e.strerror}") from e
        return ObjectInfo(name, st.st_size, st.st_mtime)

    def retained(self, name: str) -> bool:
        return False                    # immutability here is cutpoint's refusal, not the filesystem's (§19.1)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Only the directories on the prefix's path are walked: listing ``index/`` or ``locks/`` must not stat
        every pack under ``data/`` (each command lists those, and a TiB of data is 64k packs)."""
        path = prefix.split("/")[:-1]          # the directories every matching name lies under

        def unreadable(exc: OSError) -> None:
            # a directory that cannot be read must not look empty: gc would take its packs for lost and write an
            # index without them. One that vanished meanwhile (a vault not yet written to) is simply empty.
            if not isinstance(exc, FileNotFoundError):
                raise VaultError(f"cannot list {exc.filename} in the vault at {self.root}: "
                                 f"{exc.strerror or exc}") from exc

        for dirpath, dirnames, filenames in os.walk(self.root, onerror=unreadable):
            rel = os.path.relpath(dirpath, self.root)
            depth = 0 if rel == "." else rel.count("/") + 1
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and (depth >= len(path) or d == path[depth])]
            for d in dirnames:
                if os.path.islink(os.path.join(dirpath, d)):
                    # os.walk does not enter it, so its objects would be missing from every listing (gc: lost)
                    raise VaultError(f"{os.path.join(dirpath, d)} is a symbolic link; cutpoint does not follow "
                                     "links inside a vault: put the vault itself on the other disk, or mount that "
                                     "disk at this path")
            for fn in filenames:
                name = fn if rel == "." else f"{rel}/{fn}"
                if fn.startswith(".") or not name.startswith(prefix):
                    continue
                try:
                    check_name(name)
                    st = os.lstat(os.path.join(dirpath, fn))
                except (VaultError, FileNotFoundError):
                    continue
                yield ObjectInfo(name, st.st_size, st.st_mtime)

    def delete(self, name: str) -> None:
        path = self._path(name)
        _unlink(str(path))

    def sync(self) -> None:
        """One ``syncfs`` of the vault's filesystem, and of each filesystem mounted at a directory of the vault's
        top level (``data/`` on a disk of its own): one barrier each."""
        targets = [str(self.root)]
        try:
            dev = os.stat(self.root).st_dev
            with os.scandir(self.root) as it:
                targets += [e.path for e in it if e.is_dir(follow_symlinks=False) and e.stat().st_dev != dev]
        except OSError as exc:
            raise VaultError(f"cannot make the vault at {self.root} durable: {exc.strerror or exc}") from exc
        for target in targets:
            try:
                fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as exc:
                raise VaultError(f"cannot make the vault at {self.root} durable: {exc.strerror or exc}") from exc
            try:
                if _libc.syncfs(fd) != 0:   # data and directory entries of the whole filesystem: one barrier
                    err = ctypes.get_errno()
                    raise VaultError(f"cannot make the vault at {self.root} durable: {os.strerror(err)}")
            finally:
                os.close(fd)


_libc = ctypes.CDLL(None, use_errno=True)     # Python has os.sync but no syncfs
DIRECT_MIN = 1 << 20


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
