"""``restore NAME POINT --replace``: put a point back onto the original VM's own disk files, in place.

Only chunks that differ are written: each chunk of the current disk is read and hashed with the vault's chunk-id
function, and compared with the point's id for that chunk (a ``null`` chunk is compared with zeros). After a small
change since the point, that is a read of the disk and a write of a few chunks instead of a full copy.

Raw images are written directly. Any other format (qcow2, ...) is written through ``qemu-nbd`` on a private unix
socket and libnbd, so QEMU's own format driver does the writing (allocation, zero clusters, refcounts). A disk whose
size changed since the point is resized first (``truncate`` for raw, ``qemu-img resize`` otherwise); a missing disk
file is created.

The VM must be stopped (``launch.running_reason``): writing under a running guest would corrupt it. Before the first
write every chunk the point needs is checked to be in the vault, so a damaged vault stops the replace with the disks
untouched. A replace that fails midway (disk full, I/O error) leaves a mix of old and new chunks; running it again
completes it, writing only what still differs.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import CutpointError, IntegrityError, NotFoundError, UnsupportedError, UsageError
from ..workdir import private_dir
from ..vault.manifest import DiskManifest, Manifest
from ..vault.vault import Vault
from .images import Progress
from .launch import running_reason


class _Raw:
    def __init__(self, path: Path) -> None:
        self.f = open(path, "r+b")

    def pread(self, n: int, off: int) -> bytes:
        return os.pread(self.f.fileno(), n, off)

    def pwrite(self, data: bytes, off: int) -> None:
        os.pwrite(self.f.fileno(), data, off)

    def zero(self, n: int, off: int) -> None:
        os.pwrite(self.f.fileno(), bytes(n), off)

    def close(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()


class _Nbd:
    """A disk image of any format QEMU reads, served writable by qemu-nbd to this process alone."""

    def __init__(self, path: Path, fmt: str) -> None:
        import nbd  # libnbd's Python bindings (Debian python3-libnbd)

        self.dir = Path(tempfile.mkdtemp(prefix="replace-", dir=_work()))
        sock = self.dir / "nbd.sock"
        self.proc = subprocess.Popen(["qemu-nbd", "-k", str(sock), "-f", fmt, "--cache=writeback", "--discard=unmap",
                                      "--detect-zeroes=unmap", str(path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode().strip() if self.proc.poll() is not None and self.proc.stderr \
                    else "timeout"
                self._stop()
                raise CutpointError(f"qemu-nbd could not open {path}: {err}")
            time.sleep(0.02)
        self.h = nbd.NBD()
        self.h.connect_unix(str(sock))

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
    d = private_dir("replace")
    d.mkdir(parents=True, exist_ok=True)
    return d


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
    r = subprocess.run(["qemu-img", "info", "--output=json", "-f", fmt, str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        raise CutpointError(f"cannot read {path}: {r.stderr.strip()}")
    import json
    return int(json.loads(r.stdout)["virtual-size"])


def _prepare(path: Path, fmt: str, size: int) -> int | None:
    """Create or resize the disk to ``size``; returns its former size when it changed."""
    if not path.exists():
        r = subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), str(size)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise CutpointError(f"cannot create {path}: {r.stderr.strip()}")
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
        r = subprocess.run(["qemu-img", "resize", "-q", "-f", fmt, *(["--shrink"] if size < cur else []),
                            str(path), str(size)], capture_output=True, text=True)
        if r.returncode != 0:
            raise CutpointError(f"cannot resize {path} from {cur} to {size} bytes: {r.stderr.strip()}")
    return cur


def replace_disks(vault: Vault, m: Manifest, *, qmp: str | None = None, progress: Progress | None = None
                  ) -> dict[str, Any]:
    """Make the VM's disk files byte-identical to point ``m``; the VM must be stopped."""
    t0 = time.monotonic()
    plan = _plan(m)
    cfg = getattr(m, "vm_config", None) or {}
    why = running_reason(qmp or cfg.get("qmp_address"), cfg.get("pid"), cfg.get("start_time"),
                         [p for _, p, _ in plan])
    if why:
        where = qmp or cfg.get("qmp_address") or "its QMP socket"
        raise UsageError(f"VM {m.vm!r} is running ({why}); stop it first (shut the guest down, or send the QMP "
                         f"command 'quit' to {where}), then retry --replace")
    missing = sorted({c for d in m.disks for c in d.chunks if c and not vault.chunks.has(c)})
    if missing:
        raise IntegrityError(f"point {m.point} needs {len(missing)} chunk(s) missing from the vault (first: "
                             f"{missing[0][:16]}); nothing was written")
    disks = []
    for d, path, fmt in plan:
        disks.append(_replace_one(vault, m, d, path, fmt, progress))
    compared = sum(x["bytes_compared"] for x in disks)
    written = sum(x["bytes_written"] for x in disks)
    dt = time.monotonic() - t0
    return {"mode": "replace", "vm": m.vm, "point": m.point, "disks": disks, "bytes_compared": compared,
            "bytes_written": written, "duration_s": round(dt, 3), "rate_bytes_s": round(compared / max(dt, 1e-6))}


def _replace_one(vault: Vault, m: Manifest, d: DiskManifest, path: Path, fmt: str,
                 progress: Progress | None) -> dict[str, Any]:
    try:
        old_size = _prepare(path, fmt, d.size)
        target: _Raw | _Nbd = _Raw(path) if fmt == "raw" else _Nbd(path, fmt)
    except OSError as exc:
        raise CutpointError(f"cannot open {path}: {exc.strerror or exc}") from exc
    compared = written = chunks_written = 0
    cs = m.chunk_size
    zero_cache: dict[int, bytes] = {}
    try:
        for i, cid in enumerate(d.chunks):
            off = i * cs
            n = min(cs, d.size - off)
            cur = target.pread(n, off)
            compared += n
            if cid is None:
                zeros = zero_cache.setdefault(n, bytes(n))
                if cur != zeros:
                    target.zero(n, off)
                    written += n
                    chunks_written += 1
            elif vault.chunks.chunk_id(cur) != cid:
                data = vault.chunks.get(cid)
                if len(data) != n:
                    raise IntegrityError(f"chunk {i} of disk {d.name} has {len(data)} bytes, expected {n}")
                target.pwrite(data, off)
                written += n
                chunks_written += 1
            if progress:
                progress(d.name, off + n, d.size)
    except (OSError, NotFoundError) as exc:
        raise CutpointError(f"replace of disk {d.name} ({path}) failed after {written} bytes written: {exc}; run "
                            "it again to complete it") from exc
    finally:
        target.close()
    return {"disk": d.name, "path": str(path), "format": fmt, "size": d.size, "resized_from": old_size,
            "bytes_compared": compared, "bytes_written": written, "chunks_written": chunks_written,
            "chunks": len(d.chunks)}
