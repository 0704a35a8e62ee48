"""Writing a guest's files onto the host, where the guest controls every name, type, size and link target.

cutpoint runs as root; a guest filesystem is hostile input. So extraction:

* works only relative to open directory fds: every file is created ``O_CREAT|O_EXCL|O_NOFOLLOW`` with ``dir_fd=``,
  every directory made with ``mkdir(dir_fd=)`` and entered ``O_NOFOLLOW|O_DIRECTORY``: nothing outside the target is
  created, truncated or written, and no link is ever followed (the guest's, ours, or one already in the target);
* creates each name only after ``names.unsafe_reason`` passed it (no ``/``, NUL, ``.``, ``..``); others are skipped
  with a warning, as are device nodes, FIFOs, sockets, directory loops and trees deeper than ``MAX_DEPTH``;
* makes symlinks as symlinks (target bytes verbatim, never followed), drops set-uid/set-gid bits, owns what it makes
  (guest uids mean nothing on the host), and writes files sparse (zero blocks are seeked over, then truncated);
* refuses before copying when the files' allocated sizes exceed the target's free space or ``max_bytes``, and stops
  when the bytes actually written exceed that budget (a guest can lie about allocation);
* builds everything in a private ``.partial-*`` directory inside the target and renames the result into place with
  ``RENAME_NOREPLACE``; on any failure that directory is removed, so nothing is left behind.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import os
import secrets
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from ..errors import CutpointError, UnsupportedError, UsageError
from .names import escape, terminal_safe, unsafe_reason

MAX_DEPTH = 256
BLOCK = 64 * 1024
_ZERO = bytes(BLOCK)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_RENAME_NOREPLACE = 1


class SpaceError(UsageError):
    """The copy would not fit: the target's free space or ``--max-bytes``."""


@dataclass
class Node:
    """One guest entry as the source describes it; ``ref`` is the source's own handle (inode, tool path)."""

    raw: bytes
    type: str            # dir, file, link, other
    size: int
    mode: int
    ref: bytes
    ino: int = 0         # for loop detection; 0 when the filesystem has no inode numbers
    show_mode: bool = True

    @property
    def name(self) -> str:
        return escape(self.raw)

    def to_json(self) -> dict[str, object]:
        """``name`` is the escaped form (what PATH accepts), ``name_b64`` the guest's exact bytes."""
        return {"name": self.name, "type": self.type, "size": self.size,
                "mode": f"{self.mode & 0o7777:04o}" if self.show_mode else "",
                "name_b64": base64.b64encode(self.raw).decode()}


class Source(Protocol):
    def children(self, node: Node) -> list[Node]: ...
    def allocated(self, nodes: list[Node]) -> dict[bytes, int]: ...
    def readlink(self, node: Node) -> bytes: ...
    def open_stream(self, node: Node) -> AbstractContextManager[IO[bytes]]: ...


@dataclass
class Report:
    final: Path
    shown: str                                                      # the final path, escaped for output
    files: list[tuple[str, int]] = field(default_factory=list)     # (shown path, apparent size), regular files
    links: list[tuple[str, str]] = field(default_factory=list)     # (shown path, shown target)
    skipped: list[str] = field(default_factory=list)               # shown guest paths not created
    warnings: list[str] = field(default_factory=list)
    written: int = 0                                                # data bytes actually written (holes excluded)

    @property
    def bytes(self) -> int:
        return sum(s for _, s in self.files)


@dataclass
class _Item:
    node: Node
    shown: str                                   # guest path relative to the root's parent, escaped
    children: list[_Item] = field(default_factory=list)


class _Plan:
    def __init__(self, src: Source, warn: Callable[[str], None], parent: str) -> None:
        self.src = src
        self.parent = parent
        self.warn = warn
        self.skipped: list[str] = []
        self.files: list[Node] = []
        self.seen: set[int] = set()

    def skip(self, rel: str, why: str) -> None:
        shown = f"{self.parent}/{rel}"
        self.skipped.append(shown)
        self.warn(f"skipped {shown}: {why}")

    def walk(self, item: _Item, depth: int) -> None:
        node = item.node
        if node.type == "file":
            self.files.append(node)
        if node.type != "dir":
            return
        if node.ino:
            if node.ino in self.seen:
                raise _Skip("it is a directory already being copied (a loop in the guest filesystem)")
            self.seen.add(node.ino)
        if depth >= MAX_DEPTH:
            raise _Skip(f"it is more than {MAX_DEPTH} directories deep")
        dots = {b".": 0, b"..": 0}
        names: set[bytes] = set()
        for child in self.src.children(node):
            shown = f"{item.shown}/{child.name}"
            if child.raw in dots:
                dots[child.raw] += 1
                if dots[child.raw] == 1:
                    continue                     # the directory's own '.' and '..'
            why = unsafe_reason(child.raw) or _type_reason(child)
            if not why and child.raw in names:
                why = "an earlier entry of this directory has the same name"
            names.add(child.raw)
            if why:
                self.skip(shown, why)
                continue
            sub = _Item(child, shown)
            try:
                self.walk(sub, depth + 1)
            except _Skip as exc:
                self.skip(shown, str(exc))
                continue
            item.children.append(sub)


class _Skip(Exception):
    pass


def _type_reason(node: Node) -> str | None:
    if node.type in ("dir", "file", "link"):
        return None
    kind = {0o01: "a FIFO", 0o02: "a character device", 0o06: "a block device", 0o14: "a socket"}
    return f"it is {kind.get(node.mode >> 12, 'not a file, directory or symlink')}; not restored"


def extract(src: Source, root: Node, to: Path, *, max_bytes: int | None = None,
            warn: Callable[[str], None] | None = None, guest_parent: str = "") -> Report:
    """Copy ``root`` (a file, directory or symlink of the guest) into directory ``to`` as ``to/<root name>``.

    ``guest_parent`` (escaped, e.g. ``/etc``) only names skipped entries by their guest path in warnings."""
    why = unsafe_reason(root.raw)
    if why:
        raise UsageError(f"cannot restore {terminal_safe(root.name)}: {why}")
    why = _type_reason(root)
    if why:                                     # exit 9, as for 'not a file or directory' before
        raise UnsupportedError(f"cannot restore {terminal_safe(root.name)}: {why}")
    warnings: list[str] = []

    def _warn(msg: str) -> None:
        warnings.append(terminal_safe(msg))
        if warn is not None:
            warn(terminal_safe(msg))

    plan = _Plan(src, _warn, guest_parent.rstrip("/"))
    top = _Item(root, root.name)
    try:
        plan.walk(top, 0)
    except _Skip as exc:
        raise UsageError(f"cannot restore {terminal_safe(root.name)}: {exc}") from exc
    alloc = src.allocated(plan.files) if plan.files else {}
    need = sum(min(alloc.get(n.ref, n.size), n.size) for n in plan.files)

    created = [d for d in (to, *to.parents) if not os.path.lexists(d)]      # removed again if the copy fails
    to.mkdir(parents=True, exist_ok=True)
    tfd = os.open(to, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    ok = False
    try:
        final = to / os.fsdecode(root.raw)
        shown = f"{terminal_safe(str(to))}/{root.name}"
        if _exists(root.raw, tfd):
            raise UsageError(f"{shown} already exists; choose another --to directory")
        st = os.fstatvfs(tfd)
        free = st.f_bavail * st.f_frsize
        if max_bytes is not None and need > max_bytes:
            raise SpaceError(f"{terminal_safe(root.name)} needs {need} bytes, more than --max-bytes {max_bytes}; "
                             "raise --max-bytes or fetch less")
        if need > free:
            raise SpaceError(f"{terminal_safe(root.name)} needs {need} bytes but {terminal_safe(str(to))} has "
                             f"{free} free; free space or choose another --to directory")
        budget = min(free, max_bytes) if max_bytes is not None else free
        staging = f".partial-{secrets.token_hex(8)}".encode()
        os.mkdir(staging, 0o700, dir_fd=tfd)
        try:
            sfd = os.open(staging, _DIR_FLAGS, dir_fd=tfd)
            try:
                report = Report(final, shown, skipped=plan.skipped, warnings=warnings)
                _Writer(src, report, budget, str(to), plan.skip, top).make(top, sfd)
                if not _exists(root.raw, sfd):
                    raise UsageError(f"cannot restore {shown}: {warnings[-1] if warnings else 'not created'}")
                _rename_noreplace(sfd, root.raw, tfd, root.raw, shown)
            finally:
                os.close(sfd)
        finally:
            shutil.rmtree(staging, dir_fd=tfd, ignore_errors=True)
        ok = True
        return report
    finally:
        os.close(tfd)
        for d in [] if ok else created:
            try:
                os.rmdir(d)
            except OSError:
                break


def _exists(name: bytes, dfd: int) -> bool:
    try:
        os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return False
    return True


class _Writer:
    def __init__(self, src: Source, report: Report, budget: int, to: str, skip: Callable[[str, str], None],
                 top: _Item) -> None:
        self.src = src
        self.top = top
        self.skip = skip
        self.report = report
        self.budget = budget
        self.to = terminal_safe(to)

    def _refuse(self, item: _Item, why: str) -> None:
        if item is self.top:
            raise UsageError(f"cannot restore {self.to}/{item.shown}: {terminal_safe(why)}")
        self.skip(item.shown, why)

    def make(self, item: _Item, dfd: int) -> None:
        """Create ``item`` in ``dfd``. A name the target refuses (too long, taken by a case-insensitive twin, not
        valid there) is skipped with a warning; a failure while writing data stops the whole copy."""
        node = item.node
        shown = f"{self.to}/{item.shown}"
        if node.type == "link":
            try:
                target = self.src.readlink(node)
                os.symlink(target, node.raw, dir_fd=dfd)
            except (OSError, CutpointError) as exc:
                self._refuse(item, f"cannot make the symlink: {getattr(exc, 'strerror', None) or exc}")
                return
            self.report.links.append((shown, escape(target, path=True)))
            return
        try:
            if node.type == "file":
                fd = os.open(node.raw, _FILE_FLAGS, 0o600, dir_fd=dfd)
            else:
                os.mkdir(node.raw, 0o700, dir_fd=dfd)
                fd = os.open(node.raw, _DIR_FLAGS, dir_fd=dfd)
        except OSError as exc:
            self._refuse(item, f"the target refuses the name: {exc.strerror}")
            return
        try:
            if node.type == "file":
                try:
                    self._fill(node, fd, item.shown)
                except SpaceError:
                    raise
                except CutpointError as exc:                   # this file unreadable: the others still come back
                    os.unlink(node.raw, dir_fd=dfd)
                    if item is self.top:
                        raise
                    self.skip(item.shown, f"cannot read it: {exc}")
                    return
                self.report.files.append((shown, node.size))
            else:
                for child in item.children:
                    self.make(child, fd)
            os.fchmod(fd, node.mode & 0o1777)                      # no set-uid, no set-gid
        except OSError as exc:
            raise CutpointError(f"cannot write {shown}: {exc.strerror}; nothing was kept") from exc
        finally:
            os.close(fd)

    def _fill(self, node: Node, fd: int, shown: str) -> None:
        """The file's bytes from the source, zero blocks left as holes; the size must be exactly the guest's."""
        total = 0
        with self.src.open_stream(node) as stream:
            while True:
                block = stream.read(BLOCK)
                if not block:
                    break
                total += len(block)
                if total > node.size:
                    break
                if block == _ZERO[:len(block)]:
                    os.lseek(fd, len(block), os.SEEK_CUR)
                    continue
                self.report.written += len(block)
                if self.report.written > self.budget:
                    raise SpaceError(f"{terminal_safe(shown)}: the copy wrote more than the {self.budget} bytes it "
                                     "may (free space or --max-bytes); nothing was kept")
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view):]
        if total != node.size:
            raise CutpointError(f"{terminal_safe(shown)}: the filesystem tool returned {total} bytes where the guest "
                                f"file has {node.size}; the filesystem may be damaged")
        os.ftruncate(fd, node.size)


def _rename_noreplace(sfd: int, src: bytes, tfd: int, dst: bytes, shown: str) -> None:
    """``renameat2(RENAME_NOREPLACE)``: a name that appeared in the target meanwhile is never replaced."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        if fn(sfd, src, tfd, dst, _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise UsageError(f"{shown} already exists; choose another --to directory")
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise CutpointError(f"cannot move the copy into place at {shown}: {os.strerror(err)}")
    if _exists(dst, tfd):
        raise UsageError(f"{shown} already exists; choose another --to directory")
    os.rename(src, dst, src_dir_fd=sfd, dst_dir_fd=tfd)
