"""cutpoint's scratch space (fleecing overlays, NBD sockets, libvirt scratch files): private, and never a way in.

Layout ``ROOT/<vm>/<point>/`` with ROOT = ``$CUTPOINT_WORK`` or ``/var/lib/cutpoint/work`` (``paths.work_home``).
The overlays hold guest data and a backup deletes what it finds here, so another local user must not be able to read
it, plant a symbolic link in it, or pre-create any of it:

* every directory cutpoint creates or deletes here (the root, a VM's, a point's) is opened component by component
  with ``O_NOFOLLOW``, and must be a real directory owned by our effective uid and writable by nobody else; anything
  else (a symlink, a foreign owner, mode g+w/o+w) is refused naming the path and the fix, never followed or deleted
  through;
* the root's ancestors must be owned by root or us and not writable by others unless sticky (``/tmp``), so nobody
  can swap the root itself;
* names come from ``names.check_vm_name`` (a catalog row ``..`` never becomes a path);
* deletion is fd-relative (``shutil.rmtree(dir_fd=...)``, which never follows links on Linux), below a checked VM
  directory.

Restores keep their scratch in ``ROOT/.<kind>`` (``private_dir``), apart from every VM's directory.
Directories are 0700. A QEMU that runs as another user (libvirt's ``qemu:///system``) gets search permission (0711)
on the root, the VM's and the point's directory, and a subdirectory ``<point>/qemu`` of its own to write its scratch
files and socket in; that one is QEMU's, so its contents are only ever removed without following links.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UnsafePathError, UsageError
from .names import check_vm_name
from .paths import state_home, work_home

PRIVATE = 0o700
SEARCHABLE = 0o711               # others may pass through to a path they know, not list or write
QEMU_DIR = "qemu"
_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _fix(path: Path) -> str:
    return (f"remove it (or 'chown {os.geteuid()} {path} && chmod 0700 {path}' if it is yours), or set CUTPOINT_WORK "
            "to a private directory")


def _refuse(path: Path, why: str) -> UnsafePathError:
    return UnsafePathError(f"unsafe work directory {path}: {why}; {_fix(path)}")


def check_private_dir(st: os.stat_result, path: Path) -> None:
    """A directory cutpoint keeps scratch in: a real directory, ours, writable by nobody else."""
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, "it is a symbolic link")
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "it is not a directory")
    if st.st_uid != os.geteuid():
        raise _refuse(path, f"it is owned by uid {st.st_uid}, not by cutpoint's user (uid {os.geteuid()})")
    if st.st_mode & 0o022:
        raise _refuse(path, f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})")


def _check_ancestors(root: Path) -> Path:
    """The root's parent, resolved; refused if someone else could replace an ancestor."""
    parent = Path(os.path.realpath(root.parent))
    for p in [parent, *parent.parents]:
        st = os.lstat(p)
        if st.st_uid not in (0, os.geteuid()):
            raise UnsafePathError(f"unsafe work directory {root}: its ancestor {p} is owned by uid {st.st_uid}; "
                                  "set CUTPOINT_WORK to a directory under one only root or you own")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise UnsafePathError(f"unsafe work directory {root}: its ancestor {p} is writable by others "
                                  f"(mode {stat.S_IMODE(st.st_mode):04o}); set CUTPOINT_WORK to a private directory")
    return parent


def _makedirs_searchable(p: Path) -> None:
    """Missing ancestors of the root: searchable (0711) so a QEMU of another user can pass, nothing more."""
    missing = [a for a in [p, *p.parents] if not os.path.lexists(a)]
    for a in reversed(missing):
        try:
            os.mkdir(a, SEARCHABLE)
        except FileExistsError:
            continue
        os.chmod(a, SEARCHABLE)


def _open_dir(dfd: int, name: str, path: Path, *, create: bool) -> int | None:
    """Open (and with ``create`` make, 0700) directory ``name`` under ``dfd`` without following a link; checked.
    None when it does not exist and ``create`` is off."""
    if create:
        try:
            os.mkdir(name, PRIVATE, dir_fd=dfd)
        except FileExistsError:
            pass
    try:
        fd = os.open(name, _OPEN, dir_fd=dfd)
    except FileNotFoundError:
        if create:
            raise
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            check_private_dir(os.lstat(name, dir_fd=dfd), path)       # names the symlink or the file
        raise
    try:
        st = os.fstat(fd)
        check_private_dir(st, path)
        if st.st_mode & 0o044:          # left readable by an older version or a test: tighten, it is ours
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~0o044)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def _root(base: Path | None, *, create: bool) -> Iterator[int | None]:
    """The root, opened and checked (made with ``create``); None when it does not exist."""
    root = Path(os.path.abspath(base or work_home()))
    fd: int | None = None
    try:
        if create:
            _makedirs_searchable(root.parent)
        if os.path.lexists(root.parent):
            pfd = os.open(_check_ancestors(root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fd = _open_dir(pfd, root.name, root, create=create)
            finally:
                os.close(pfd)
    except PermissionError as exc:
        raise UnsafePathError(f"cannot create the work directory {root} ({exc.strerror}): run as root, or set "
                              "CUTPOINT_WORK to a private directory you own") from exc
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


@contextmanager
def _vm_dir(vm: str, base: Path | None, *, create: bool) -> Iterator[tuple[Path, int | None]]:
    check_vm_name(vm)
    root = Path(os.path.abspath(base or work_home()))
    with _root(base, create=create) as rfd:
        fd = _open_dir(rfd, vm, root / vm, create=create) if rfd is not None else None
        try:
            yield root / vm, fd
        finally:
            if fd is not None:
                os.close(fd)


def vm_path(vm: str, base: Path | None = None) -> Path:
    """Where ``vm``'s point directories live (nothing is created); the name is checked."""
    return Path(os.path.abspath(base or work_home())) / check_vm_name(vm)


def private_dir(kind: str, base: Path | None = None) -> Path:
    """``ROOT/.<kind>``, made private and checked: scratch of restores (``instant``, ``views``, ``mounts``,
    ``replace``). The leading dot keeps it apart from every VM's directory (a VM name starts with a letter or digit),
    so a VM named ``instant`` never sweeps an instant restore's files."""
    root = Path(os.path.abspath(base or work_home()))
    name = "." + check_vm_name(kind, what="work subdirectory")
    with _root(root, create=True) as rfd:
        assert rfd is not None
        fd = _open_dir(rfd, name, root / name, create=True)
        assert fd is not None
        os.close(fd)
    return root / name


def point_path(vm: str, point: str, base: Path | None = None) -> Path:
    """Where point ``point`` of ``vm`` keeps its scratch (nothing is created); both names are checked."""
    check_vm_name(vm)
    check_vm_name(point, what="point id")
    return Path(os.path.abspath(base or work_home())) / vm / point


def _split(path: Path, base: Path | None) -> tuple[Path, str, str]:
    root = Path(os.path.abspath(base or work_home()))
    rel = Path(os.path.abspath(path)).relative_to(root).parts if Path(os.path.abspath(path)).is_relative_to(root) \
        else ()
    if len(rel) not in (2, 3) or (len(rel) == 3 and rel[2] != QEMU_DIR):
        raise UsageError(f"{path} is not a point's work directory under {root}")
    return root, check_vm_name(rel[0]), check_vm_name(rel[1], what="point id")


def make_point_dir(path: Path, base: Path | None = None) -> Path:
    """Create ``ROOT/<vm>/<point>`` privately (every component checked); returns it."""
    root, vm, point = _split(path, base)
    with _vm_dir(vm, root, create=True) as (_, vfd):
        assert vfd is not None
        fd = _open_dir(vfd, point, root / vm / point, create=True)
        assert fd is not None
        os.close(fd)
    return root / vm / point


def share_with(path: Path, uid: int, gid: int, base: Path | None = None) -> Path:
    """Let a QEMU running as ``uid``:``gid`` write in point directory ``path``: the root, the VM's and the point's
    directory become searchable (0711) and ``<point>/qemu`` is made, owned by it. Returns that directory."""
    root, vm, point = _split(path, base)
    state = Path(os.path.realpath(state_home()))
    for p in root.parents:                  # above the root: not ours to change (but our state dir); say which blocks
        st = os.stat(p)
        if Path(os.path.realpath(p)) == state and st.st_uid == os.geteuid() and not st.st_mode & 0o011:
            os.chmod(p, stat.S_IMODE(st.st_mode) | 0o011)   # the default root is in it: search only, never list
            continue
        if not (st.st_mode & stat.S_IXOTH or (st.st_uid == uid and st.st_mode & stat.S_IXUSR)
                or (st.st_gid == gid and st.st_mode & stat.S_IXGRP)):
            raise UnsafePathError(f"the domain's QEMU (uid {uid}) cannot reach the work directory {root}: {p} is not "
                                  "searchable for it; chmod o+x it, or set CUTPOINT_WORK elsewhere")
    with _root(root, create=True) as rfd:
        assert rfd is not None
        vfd = _open_dir(rfd, vm, root / vm, create=True)
        assert vfd is not None
        try:
            pfd = _open_dir(vfd, point, root / vm / point, create=True)
            assert pfd is not None
            try:
                for fd in (rfd, vfd, pfd):
                    os.fchmod(fd, SEARCHABLE)
                try:
                    os.mkdir(QEMU_DIR, PRIVATE, dir_fd=pfd)
                except FileExistsError:
                    pass
                qfd = os.open(QEMU_DIR, _OPEN, dir_fd=pfd)
                try:
                    os.fchown(qfd, uid, gid)
                    os.fchmod(qfd, PRIVATE)
                finally:
                    os.close(qfd)
            finally:
                os.close(pfd)
        finally:
            os.close(vfd)
    return root / vm / point / QEMU_DIR


def point_dirs(vm: str, base: Path | None = None) -> list[Path]:
    """The point directories ``vm`` has (checked); none when the VM never had one."""
    with _vm_dir(vm, base, create=False) as (vdir, vfd):
        return [vdir / n for n in _checked_entries(vfd, vdir)] if vfd is not None else []


def _checked_entries(vfd: int, vdir: Path) -> list[str]:
    names = sorted(os.listdir(vfd))
    for n in names:
        st = os.lstat(n, dir_fd=vfd)
        if not stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
            raise _refuse(vdir / n, "a VM's work directory holds only point directories, and this is "
                          + ("a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"))
    return names


def _remove_point(vfd: int, vdir: Path, point: str) -> None:
    fd = _open_dir(vfd, point, vdir / point, create=False)      # checks the top: rmtree's own check is silent
    if fd is None:
        return
    os.close(fd)
    shutil.rmtree(point, dir_fd=vfd)                            # fd-relative, never follows a link


def sweep(vm: str, base: Path | None = None) -> list[str]:
    """Delete every point directory of ``vm`` (leftovers of killed runs; the caller holds the VM's lock)."""
    with _vm_dir(vm, base, create=False) as (vdir, vfd):
        if vfd is None:
            return []
        names = _checked_entries(vfd, vdir)
        for n in names:
            _remove_point(vfd, vdir, n)
        return [str(vdir / n) for n in names]


def remove_workdir(path: Path, base: Path | None = None) -> list[str]:
    """Delete a point's work directory (``path`` may be its ``qemu`` subdirectory) and its VM's directory once empty.
    Returns problems instead of raising: this runs in cleanup, where every step is attempted."""
    try:
        root, vm, point = _split(path, base)
        with _vm_dir(vm, root, create=False) as (vdir, vfd):
            if vfd is None:
                return []
            _remove_point(vfd, vdir, point)
        with _root(root, create=False) as rfd:
            if rfd is not None:
                try:
                    os.rmdir(vm, dir_fd=rfd)           # when no other backup of it is under way
                except OSError:
                    pass
    except (UnsafePathError, UsageError) as exc:
        return [str(exc)]
    except OSError as exc:
        return [f"could not delete work directory {path}: {exc.strerror or exc}"]
    return []
