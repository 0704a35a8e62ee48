"""Restoring a point's disks to image files: one image per disk, named after the disk, byte-identical to the cut.

Zero chunks are never written, so raw images are sparse where the source read as zero. qcow2 output is produced by
``qemu-img convert`` from a sparse raw file in the same directory (which keeps zero clusters unallocated). Files are
written under a temporary name and renamed only when complete, so a failed restore (damaged chunk, full disk) leaves
nothing that looks like a finished image. Images are private (0600, directories created 0700) and every file is
created with ``O_EXCL|O_NOFOLLOW``: a symlink planted at a target or temporary path is refused, never followed.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import qemuimg
from ..backup.chunker import IN_FLIGHT, WORKERS
from ..errors import CutpointError, IntegrityError, NotFoundError, UsageError
from ..vault.fsutil import start_writeback
from ..vault.manifest import DiskManifest, Manifest
from ..vault.packstore import PackStore
from ..vault.vault import Vault
from . import private
from .targets import FORMATS
Progress = Callable[[str, int, int], None]


@dataclass
class RestoredFile:
    disk: str
    path: Path
    size: int


def restore_point(vault: Vault, manifest: Manifest, to: Path, fmt: str = "raw",
                  progress: Progress | None = None) -> list[RestoredFile]:
    if fmt not in FORMATS:
        raise UsageError(f"unknown image format {fmt!r}; use one of {', '.join(FORMATS)}")
    private.makedirs(to)
    targets = [(d, to / f"{_safe(d.name)}.{fmt}") for d in manifest.disks]
    clash = [str(p) for _, p in targets if os.path.lexists(p)]      # a dangling symlink is in the way too
    if clash:
        raise UsageError(f"restore target already exists: {', '.join(clash)}; choose an empty --to directory")
    done: list[RestoredFile] = []
    try:
        for disk, path in targets:
            _restore_disk(vault, manifest, disk, path, fmt, progress)
            done.append(RestoredFile(disk.name, path, disk.size))
    except BaseException:
        for f in done:
            f.path.unlink(missing_ok=True)
        raise
    return done


def _restore_disk(vault: Vault, m: Manifest, disk: DiskManifest, path: Path, fmt: str,
                  progress: Progress | None) -> None:
    raw = path.with_name(f".{path.name}.partial")
    tmp = path.with_name(f".{path.name}.convert")
    made: list[Path] = []
    try:
        private.refuse_planted(raw, stale_ok=True)             # a killed restore's leftover goes, a symlink stops us
        fd = private.create(raw)
        made.append(raw)
        try:
            os.ftruncate(fd, disk.size)
            _write_chunks(vault, m, disk, fd, progress, direct=fmt == "raw")   # qcow2: qemu-img reads it back
            os.fsync(fd)
        finally:
            os.close(fd)
        if fmt == "qcow2":
            private.refuse_planted(tmp, stale_ok=True)
            os.close(private.create(tmp))                       # ours, 0600: qemu-img writes into it, not a link
            made.append(tmp)
            qemuimg.convert(raw, tmp, "raw", "qcow2", what=f"qemu-img convert of disk {disk.name} failed",
                            env=private.child_env(), umask=private.UMASK)
            _chmod_private(tmp)
            os.replace(tmp, path)
        else:
            os.replace(raw, path)
    except OSError as exc:
        raise CutpointError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        for p in made:
            p.unlink(missing_ok=True)


def _chmod_private(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


ALIGN = 4096                # O_DIRECT: offsets, lengths and buffer addresses in multiples of this


class _ImageWriter:
    """Writes stretches of decoded chunks into an image, from several threads.

    Where the filesystem takes it, a stretch goes to the device with ``O_DIRECT`` from a reused, page-aligned buffer
    of the writing thread, past the page cache: on these machines every fresh page-cache page costs a fault in the
    host, and perf of a 1.5 GiB restore found 1.5 s of its CPU copying into the page cache. The image's final fsync
    still follows, for the metadata. A stretch that is not aligned (a disk's short last chunk), and every stretch
    where ``O_DIRECT`` is refused (tmpfs, no /proc, a filesystem that opens with it but refuses the write), goes
    through the page cache, one writer at a time (the others sleep instead of spinning on the file's lock in the
    kernel), its writeback started at once so that the final fsync waits for little."""

    def __init__(self, fd: int, direct: bool, most: int) -> None:
        self.fd = fd
        self.most = most                     # the largest stretch: the buffers' size
        self.dfd = _direct_fd(fd) if direct and most % ALIGN == 0 else None
        self.direct = self.dfd is not None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._buffers: list[mmap.mmap] = []

    def write(self, at: int, datas: list[bytes]) -> None:
        n = sum(len(d) for d in datas)
        if self.direct and self.dfd is not None and at % ALIGN == 0 and n % ALIGN == 0 and n <= self.most:
            buf = self._buffer()
            pos = 0
            for d in datas:
                buf[pos:pos + len(d)] = d
                pos += len(d)
            with memoryview(buf) as whole, whole[:n] as view:
                try:
                    done = os.pwrite(self.dfd, view, at)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    self.direct = False      # opened with O_DIRECT, but such writes refused: the page cache now
                    done = 0
                if done < n:                 # the rest through the page cache, which says why it cannot go on
                    with self._lock:         # if the disk filled up
                        _pwrite_all(self.fd, view[done:], at + done)
                    start_writeback(self.fd, at + done, n - done)
            return
        with self._lock:
            done = os.pwritev(self.fd, datas, at)
            if done < n:
                _pwrite_all(self.fd, memoryview(b"".join(datas))[done:], at + done)
        start_writeback(self.fd, at, n)

    def _buffer(self) -> mmap.mmap:
        buf: mmap.mmap | None = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = mmap.mmap(-1, self.most)       # page-aligned
            with self._lock:
                self._buffers.append(buf)
        return buf

    def close(self) -> None:
        if self.dfd is not None:
            os.close(self.dfd)
            self.dfd = None
        for buf in self._buffers:
            buf.close()
        self._buffers.clear()


def _direct_fd(fd: int) -> int | None:
    """A second descriptor of the same open file with ``O_DIRECT`` (through /proc/self/fd: the file itself, never
    a path that could be swapped meanwhile), or None where it is refused."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return None


def _pwrite_all(fd: int, view: memoryview, at: int) -> None:
    """The rest of a short write: the next write says why (ENOSPC), or finishes it."""
    while len(view):
        done = os.pwrite(fd, view, at)
        if done <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view, at = view[done:], at + done


RUN_BYTES = 4 << 20
REMOTE_WORKERS = 8          # S3: reads at once (ranged GETs in parallel: the read-ahead of an image restore)
REMOTE_WINDOW = 64 << 20    # S3: bytes of (non-zero) chunks planned together, so that they become few, large GETs
REMOTE_READ = 8 << 20       # S3: at most this many bytes per GET (and in memory per reading worker)
REMOTE_GAP = 256 << 10      # S3: a hole up to this size between wanted blobs of a pack is read through


def _write_chunks(vault: Vault, m: Manifest, disk: DiskManifest, fd: int, progress: Progress | None, *,
                  direct: bool = False) -> None:
    """Fetch, check and write every non-zero chunk. Chunks are taken in *windows* (zero chunks are skipped, not
    window breakers), and a window's chunks are read with as few storage reads as the layout allows: a backup
    appends a disk's chunks to its packs nearly in order, so a window is a few stretches of a few packs.

    - On a directory a window is a run of up to 4 MiB of chunks, one task, read with one read per stretch of a
      pack (``get_many``).
    - On S3 every read is a request, and SeaweedFS here served 1 MiB ranged GETs at a third of the rate of 4 MiB
      ones (docs/performance.md): a window is 64 MiB of chunks, which are grouped by pack into reads of up
      to 8 MiB that read small holes through (``PackStore.plan_reads``); each group is one task.

    A task writes what it decodes with one write per stretch of consecutive chunks (at most a run; with ``direct``
    past the page cache where it can, ``_ImageWriter``), so it never holds more than its read and one run of
    decoded chunks. Worker threads overlap reading, decrypting, decompressing and hashing (all release the GIL),
    with a bounded number of tasks in flight."""
    cs = m.chunk_size
    per_run = max(1, RUN_BYTES // cs)
    remote = getattr(vault, "remote", None) is not None      # S3: reads wait on the network, not on the CPU
    store = vault.chunks
    coalesce = remote and isinstance(store, PackStore)
    workers, in_flight = (REMOTE_WORKERS, 2 * REMOTE_WORKERS) if remote else (WORKERS, IN_FLIGHT)
    window = max(per_run, REMOTE_WINDOW // cs) if coalesce else per_run
    writer = _ImageWriter(fd, direct, max(RUN_BYTES, cs))

    def fail(exc: Exception) -> IntegrityError:
        return IntegrityError(f"cannot restore disk {disk.name} of point {m.point}: {exc}; nothing was "
                              "written; run 'cutpoint verify --read-data' and restore another point")

    def chunks_of(group: list[tuple[int, str]]) -> Iterator[tuple[int, bytes]]:
        """(chunk index, checked bytes) of a group's chunks."""
        cids = [c for _, c in group]
        expects = [min(cs, disk.size - i * cs) for i, _ in group]
        try:
            if coalesce:
                assert isinstance(store, PackStore)
                for k, data in store.read_group(cids, expects):
                    yield group[k][0], data
            else:
                yield from zip((i for i, _ in group), store.get_many(cids, expects))
        except (IntegrityError, NotFoundError) as exc:
            raise fail(exc) from exc

    def one(group: list[tuple[int, str]]) -> None:
        seg: list[bytes] = []
        at = 0

        def flush() -> None:
            writer.write(at, seg)
            seg.clear()

        for i, data in chunks_of(group):
            expect = min(cs, disk.size - i * cs)
            if len(data) != expect:
                raise CutpointError(f"chunk {i} of disk {disk.name} has {len(data)} bytes, expected {expect}")
            if seg and (i * cs != at + len(seg) * cs or len(seg) == per_run):
                flush()
            if not seg:
                at = i * cs
            seg.append(data)
        if seg:
            flush()

    def tasks(win: list[tuple[int, str]]) -> list[list[tuple[int, str]]]:
        if not coalesce:
            return [win]
        assert isinstance(store, PackStore)
        try:
            plan = store.plan_reads([c for _, c in win], gap=REMOTE_GAP, span=REMOTE_READ)
        except (IntegrityError, NotFoundError) as exc:
            raise fail(exc) from exc
        return [[win[k] for k in g] for g in plan]

    pending: deque[Future[None]] = deque()
    win: list[tuple[int, str]] = []
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            try:
                for i, cid in enumerate(_checked(disk.chunks, disk.name, m.point)):
                    if cid is not None:
                        win.append((i, cid))
                        if len(win) == window:
                            pending.extend(pool.submit(one, t) for t in tasks(win))
                            win = []
                    while len(pending) > in_flight:
                        pending.popleft().result()
                    if progress and (i % per_run == 0 or i == len(disk.chunks) - 1):
                        progress(disk.name, min((i + 1) * cs, disk.size), disk.size)
                if win:
                    pending.extend(pool.submit(one, t) for t in tasks(win))
                while pending:
                    pending.popleft().result()
            finally:
                for fut in pending:
                    fut.cancel()
    finally:
        writer.close()                      # after the pool: no thread writes any more


def _checked(chunks: Iterable[str | None], disk: str, point: str) -> Iterator[str | None]:
    """A disk's chunk ids; a damaged or incomplete index (format v4) stops the restore naming the disk."""
    it = iter(chunks)
    while True:
        try:
            cid = next(it)
        except StopIteration:
            return
        except (IntegrityError, NotFoundError) as exc:
            raise IntegrityError(f"cannot restore disk {disk} of point {point}: {exc}; nothing was written; run "
                                 "'cutpoint verify' and restore another point") from exc
        yield cid


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "disk"
