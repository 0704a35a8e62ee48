"""``restore NAME POINT --replace``: put a point back onto the original VM's own disk files, in place.

Only chunks that differ are written: each chunk of the current disk is read and hashed with the vault's chunk-id
function, and compared with the point's id for that chunk (a ``null`` chunk is compared with zeros). After a small
change since the point, that is a read of the disk and a write of a few chunks instead of a full copy.

Raw images are written directly. Any other format (qcow2, ...) is written through ``qemu-nbd`` on a private unix
socket and libnbd, so QEMU's own format driver does the writing (allocation, zero clusters, refcounts). A disk whose
size changed since the point is resized first (``truncate`` for raw, ``qemu-img resize`` otherwise); a missing disk
file is created.

The VM must be stopped, which the restore driver checks (QMP: ``launch.running_reason``, again just before the
first write; libvirt: the domain is shut off): writing under a running guest would corrupt it. A replace is all or
nothing with respect to the vault: every chunk it will write is fetched and authenticated into a private staging
file under ``$CUTPOINT_WORK`` (space: the bytes that differ) before the first byte of any disk is written, so a
damaged or missing chunk leaves every disk byte-identical. Each target must still have the point's format (probed)
and the size seen when it was compared; a block device is opened with ``O_EXCL`` (refused while mounted or held).
A write pass that fails midway (disk full, I/O error) leaves a mix of old and new chunks; running it again completes
it, writing only what still differs.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import qemuimg
from ..errors import CutpointError, IntegrityError, NotFoundError, UnsupportedError, UsageError
from ..workdir import private_dir
from ..vault.manifest import DiskManifest, Manifest
from ..vault.vault import Vault
from . import private
from .images import Progress


class _Raw:
    """A raw image or block device, opened once for the whole replace: a block device with ``O_EXCL``, so one that
    is mounted, in a RAID or LVM, or held by another process is refused instead of written under its user."""

    def __init__(self, path: Path) -> None:
        flags = os.O_RDWR | os.O_CLOEXEC
        if stat.S_ISBLK(os.stat(path).st_mode):
            flags |= os.O_EXCL
        try:
            self.fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise UsageError(f"{path} is in use (mounted, or held open by another process); nothing was "
                                 "written; stop what uses it, then retry --replace") from exc
            raise

    def size(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_END)

    def resize(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def pread(self, n: int, off: int) -> bytes:
        return os.pread(self.fd, n, off)

    def pwrite(self, data: bytes, off: int) -> None:
        os.pwrite(self.fd, data, off)

    def zero(self, n: int, off: int) -> None:
        os.pwrite(self.fd, bytes(n), off)

    def close(self) -> None:
        try:
            os.fsync(self.fd)
        finally:
            os.close(self.fd)


class _Nbd:
    """A disk image of any format QEMU reads, served writable by qemu-nbd to this process alone."""

    def __init__(self, path: Path, fmt: str, readonly: bool = False) -> None:
        import nbd  # type: ignore[import-untyped]  # libnbd's Python bindings (Debian python3-libnbd)

        self.dir = Path(tempfile.mkdtemp(prefix="replace-", dir=_work()))
        sock = self.dir / "nbd.sock"
        mode = ["-r"] if readonly else ["--cache=writeback", "--discard=unmap", "--detect-zeroes=unmap"]
        self.proc = subprocess.Popen(["qemu-nbd", "-k", str(sock), "-f", fmt, *mode, str(path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=private.child_env())
        deadline = time.monotonic() + 20
        while True:
            # The socket file appears at bind(), before qemu-nbd listens: until then a connect is refused.
            if sock.exists():
                h = nbd.NBD()
                try:
                    h.connect_unix(str(sock))
                    break
                except nbd.Error as exc:
                    if exc.errnum not in (errno.ECONNREFUSED, errno.ENOENT):
                        self._stop()
                        raise CutpointError(f"cannot reach qemu-nbd serving {path}: {exc}") from exc
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode().strip() if self.proc.poll() is not None and self.proc.stderr \
                    else "timeout"
                self._stop()
                raise CutpointError(f"qemu-nbd could not open {path}: {err}")
            time.sleep(0.02)
        self.h = h

    def pread(self, n: int, off: int) -> bytes:
        return bytes(self._io(self.h.pread, n, off))

    def pwrite(self, data: bytes, off: int) -> None:
        self._io(self.h.pwrite, data, off)

    def zero(self, n: int, off: int) -> None:
        self._io(self.h.zero, n, off)

    @staticmethod
    def _io(fn: Any, *args: Any) -> Any:
        import nbd
        try:
            return fn(*args)
        except nbd.Error as exc:     # one error type for the caller: an I/O error on the disk
            raise OSError(exc.errnum or 5, str(exc)) from exc

    def close(self) -> None:
        try:
            if not self.h.is_read_only():
                self.h.flush()
            self.h.shutdown()
        finally:
            self._stop()

    def _stop(self) -> None:
        try:
            self.proc.wait(10)       # qemu-nbd without --persistent exits when its one client leaves
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(10)
        for p in self.dir.iterdir():
            p.unlink()
        self.dir.rmdir()


def _work() -> Path:
    return private_dir("replace")


def _plan(m: Manifest) -> list[tuple[DiskManifest, Path, str]]:
    out = []
    for d in m.disks:
        f = d.filename
        if not f or f.startswith(("json:", "nbd:", "nbd+", "iscsi:", "rbd:", "http")) or not f.startswith("/"):
            raise UnsupportedError(f"cannot replace disk {d.name}: its image {f or '(unknown)'} is not a local file; "
                                   f"restore it with --to DIR instead")
        out.append((d, Path(f), d.driver if d.driver else "raw"))
    return out


def _current_size(path: Path, fmt: str) -> int:
    if fmt == "raw":            # seek, not stat: a block device (an LVM volume) has st_size 0
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)
    return qemuimg.virtual_size(path, fmt, env=private.child_env())


def _prepare(path: Path, fmt: str, size: int) -> int | None:
    """Create or resize the disk to ``size``; returns its former size when it changed."""
    if not path.exists():
        qemuimg.create(path, fmt, size, env=private.child_env(), umask=private.UMASK)
        return 0
    cur = _current_size(path, fmt)
    if cur == size:
        return None
    if fmt == "raw" and stat.S_ISBLK(path.stat().st_mode):
        raise UsageError(f"{path} is a block device of {cur} bytes and the point's disk has {size}: a block device "
                         f"cannot be resized here; resize it to {size} bytes (e.g. lvresize -L {size}b), then retry")
    if fmt == "raw":
        os.truncate(path, size)
    else:
        qemuimg.resize(path, fmt, size, shrink=size < cur, what=f"cannot resize {path} from {cur} to {size} bytes",
                       env=private.child_env())
    return cur


def _probe_format(path: Path) -> str:
    """The format QEMU sees in the image now (probed, not told)."""
    return qemuimg.probe_format(path, env=private.child_env())


@dataclass
class _Disk:
    """One disk of a replace, after the read-only pass: what it is now and which chunks must be written."""

    d: DiskManifest
    path: Path
    fmt: str
    exists: bool
    size_before: int
    writes: list[tuple[int, str | None]] = field(default_factory=list)   # chunk index, id (None: zeros)
    staged: dict[int, int] = field(default_factory=dict)                  # chunk index -> offset in the stage
    compared: int = 0


def _observe(path: Path, fmt: str, d: DiskManifest) -> tuple[bool, int]:
    """(exists, current size), refusing a target whose format is not the point's (writing raw bytes into a qcow2
    file, or the reverse, would destroy it)."""
    if not path.exists():
        return False, 0
    seen = _probe_format(path)
    if seen != fmt:
        raise UsageError(f"{path} is a {seen} image now and the point's disk {d.name} is {fmt}; nothing was "
                         f"written; restore it with --to DIR instead")
    return True, _current_size(path, fmt)


def _compare(vault: Vault, m: Manifest, d: DiskManifest, path: Path, fmt: str,
             progress: Progress | None) -> _Disk:
    """Read the current disk (nothing is written) and list the chunks that differ from the point."""
    exists, size = _observe(path, fmt, d)
    disk = _Disk(d, path, fmt, exists, size)
    cs = m.chunk_size
    src: _Raw | _Nbd | None = None
    if exists:
        src = _Raw(path) if fmt == "raw" else _Nbd(path, fmt, readonly=True)
    try:
        zero_cache: dict[int, bytes] = {}
        for i, cid in enumerate(d.chunks):
            off = i * cs
            n = min(cs, d.size - off)
            have = max(0, min(n, size - off))
            cur = (src.pread(have, off) if src is not None and have else b"") + bytes(n - have)
            disk.compared += n
            if cid is None:
                if cur != zero_cache.setdefault(n, bytes(n)):
                    disk.writes.append((i, None))
            elif vault.chunks.chunk_id(cur) != cid:
                disk.writes.append((i, cid))
            if progress:
                progress(d.name, off + n, d.size)
    except OSError as exc:
        raise CutpointError(f"cannot read disk {d.name} ({path}): {exc}; nothing was written") from exc
    finally:
        if src is not None:
            src.close()
    return disk


def _stage(vault: Vault, m: Manifest, disks: list[_Disk], stage: Path) -> None:
    """Fetch and authenticate every chunk the replace will write, into a private staging file: a damaged or missing
    chunk stops the replace here, before the first byte of any disk is written."""
    fd = private.create(stage)
    pos = 0
    try:
        for disk in disks:
            for i, cid in disk.writes:
                if cid is None:
                    continue
                n = min(m.chunk_size, disk.d.size - i * m.chunk_size)
                try:
                    data = vault.chunks.get(cid)
                except (IntegrityError, NotFoundError) as exc:
                    raise IntegrityError(f"cannot replace disk {disk.d.name} of point {m.point}: {exc}; nothing was "
                                         "written; run 'cutpoint verify --read-data' and replace from another "
                                         "point (or repair the vault)") from exc
                if len(data) != n:
                    raise IntegrityError(f"chunk {i} of disk {disk.d.name} has {len(data)} bytes, expected {n}; "
                                         "nothing was written")
                try:
                    os.pwrite(fd, data, pos)
                except OSError as exc:
                    raise CutpointError(f"cannot stage the point's data in {stage.parent} ({exc.strerror or exc}); "
                                        "nothing was written; free space there or set CUTPOINT_WORK") from exc
                disk.staged[i] = pos
                pos += n
    finally:
        os.close(fd)


def _write(m: Manifest, disk: _Disk, stage_fd: int) -> dict[str, Any]:
    """Put the staged chunks onto the disk, after checking it is still what was compared."""
    d, path, fmt = disk.d, disk.path, disk.fmt
    exists, size = _observe(path, fmt, d)
    if (exists, size) != (disk.exists, disk.size_before):
        raise CutpointError(f"{path} changed while the replace was reading it (size {disk.size_before} -> {size}); "
                            "nothing was written to it; make sure nothing uses the VM's disks, then retry")
    try:
        old_size = _prepare(path, fmt, d.size)
        target: _Raw | _Nbd = _Raw(path) if fmt == "raw" else _Nbd(path, fmt)
    except OSError as exc:
        raise CutpointError(f"cannot open {path}: {exc.strerror or exc}") from exc
    written = 0
    cs = m.chunk_size
    try:
        if isinstance(target, _Raw) and target.size() != d.size:
            raise CutpointError(f"{path} has {target.size()} bytes after resizing, expected {d.size}")
        for i, cid in disk.writes:
            off = i * cs
            n = min(cs, d.size - off)
            if cid is None:
                target.zero(n, off)
            else:
                target.pwrite(os.pread(stage_fd, n, disk.staged[i]), off)
            written += n
    except OSError as exc:
        raise CutpointError(f"replace of disk {d.name} ({path}) failed after {written} bytes written: {exc}; run "
                            "it again to complete it") from exc
    finally:
        target.close()
    return {"disk": d.name, "path": str(path), "format": fmt, "size": d.size, "resized_from": old_size,
            "bytes_compared": disk.compared, "bytes_written": written, "chunks_written": len(disk.writes),
            "chunks": len(d.chunks)}


def replace_files(vault: Vault, m: Manifest, plan: list[tuple[DiskManifest, Path, str]],
                  progress: Progress | None = None, before_write: Callable[[], None] | None = None
                  ) -> list[dict[str, Any]]:
    """The engine: make each ``(disk, file, format)`` of ``plan`` byte-identical to point ``m``, all or nothing with
    respect to the vault. Three passes: compare (read-only), stage (every needed chunk fetched and authenticated into
    a private file), write. ``before_write`` runs between staging and the first write (a last "is the VM still
    stopped?" check). An I/O error on a disk during the write pass leaves a mix of old and new chunks; running the
    replace again completes it, writing only what still differs."""
    disks = [_compare(vault, m, d, path, fmt, progress) for d, path, fmt in plan]
    work = Path(tempfile.mkdtemp(prefix="stage-", dir=_work()))        # 0700
    try:
        stage = work / "chunks"
        _stage(vault, m, disks, stage)
        if before_write is not None:
            before_write()
        fd = os.open(stage, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            return [_write(m, disk, fd) for disk in disks]
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def replace_planned(vault: Vault, m: Manifest, plan: list[tuple[DiskManifest, Path, str]],
                    progress: Progress | None = None, before_write: Callable[[], None] | None = None
                    ) -> list[dict[str, Any]]:
    """Make each planned disk file (path, format) byte-identical to its disk of point ``m``, writing only what
    differs. Nothing is written unless the vault holds every chunk the point needs. The caller (a restore driver)
    has made sure no VM uses the files; ``before_write`` lets it check again just before the first write."""
    missing = sorted({c for d in m.disks for c in d.chunks if c and not vault.chunks.has(c)})
    if missing:
        raise IntegrityError(f"point {m.point} needs {len(missing)} chunk(s) missing from the vault (first: "
                             f"{missing[0][:16]}); nothing was written")
    return replace_files(vault, m, plan, progress, before_write)

