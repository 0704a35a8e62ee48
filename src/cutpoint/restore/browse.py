"""``cutpoint files`` and ``cutpoint mount``: a point's disk as a file (nbdkit + nbdfuse), then filesystem tools.

The functions here return the JSON results of the commands; ``chunks_read`` against ``chunks_stored`` is the
evidence that only what the listing or the file needed came out of the vault.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CutpointError, NotFoundError, UnsupportedError, UsageError
from ..workdir import private_dir
from ..vault.manifest import DiskManifest, Manifest
from ..vault.vault import Vault
from . import files as fsmod
from .names import terminal_safe
from .nbdserve import FileView, nbdkit_argv, unmount
from .sandbox import Sandbox


@dataclass
class View:
    disk: DiskManifest
    image: Path
    stats: Path
    sandbox: Sandbox                 # where the filesystem tools run (confined: see restore/sandbox.py)

    def chunks_read(self) -> int:
        try:
            return len(set(self.stats.read_text().split()))
        except OSError:
            return 0


def choose_disk(m: Manifest, disk: str | None) -> DiskManifest:
    if disk is None:
        if len(m.disks) == 1:
            return m.disks[0]
        raise UsageError(f"point {m.point} has disks {', '.join(d.name for d in m.disks)}; choose one with --disk")
    for d in m.disks:
        if d.name == disk:
            return d
    raise NotFoundError(f"point {m.point} has no disk {disk!r} (it has: {', '.join(d.name for d in m.disks)})")


@contextmanager
def disk_view(vault: Vault, m: Manifest, disk: DiskManifest, key_file: Path | None = None,
              base: Path | None = None) -> Iterator[View]:
    base = base or private_dir("views")
    base.mkdir(parents=True, exist_ok=True)
    stats = base / f"stats-{os.getpid()}-{time.monotonic_ns()}"
    stats.touch()
    args = nbdkit_argv(vault.root, m.vm, m.point, disk=disk.name, stats=stats, key_file=key_file)
    scratch = Path(tempfile.mkdtemp(prefix="sandbox-", dir=base))
    try:
        with FileView(args, base) as fv:
            yield View(disk, fv.path, stats, Sandbox(fv.mnt, scratch))
    finally:
        stats.unlink(missing_ok=True)
        scratch.rmdir()


def _result(m: Manifest, view: View, vol: fsmod.Volume | None, t0: float) -> dict[str, Any]:
    return {"vm": m.vm, "point": m.point, "disk": view.disk.name, "volume": vol.to_json() if vol else None,
            "chunks_read": view.chunks_read(), "chunks_stored": sum(1 for c in view.disk.chunks if c),
            "duration_s": round(time.monotonic() - t0, 3)}


def list_files(vault: Vault, m: Manifest, disk: str | None, path: str, part: int | None,
               key_file: Path | None = None) -> dict[str, Any]:
    """List ``path`` (a directory's children, or one file); without a disk on a multi-disk point, the volumes.

    A listing also names every volume of its disk (``volumes``), so that a caller can offer the other partitions."""
    t0 = time.monotonic()
    if disk is None and len(m.disks) > 1:
        out = []
        for d in m.disks:
            with disk_view(vault, m, d, key_file) as v:
                vols = fsmod.volumes(v.image, v.sandbox)
                out.append({"disk": d.name, "size": d.size, "volumes": [x.to_json() for x in vols]})
        return {"vm": m.vm, "point": m.point, "disks": out, "duration_s": round(time.monotonic() - t0, 3)}
    d = choose_disk(m, disk)
    with disk_view(vault, m, d, key_file) as v:
        vols = fsmod.volumes(v.image, v.sandbox)
        vol = fsmod.pick(vols, part, d.name)
        entry, children = fsmod.Fs(v.image, vol, v.sandbox).ls(path)
        res = _result(m, v, vol, t0)
    res.update(volumes=[x.to_json() for x in vols], path=terminal_safe(path), type=entry.type,
               entries=[e.to_json() for e in (children if entry.type == "dir" else [entry])])
    return res


def get_files(vault: Vault, m: Manifest, disk: str | None, path: str, to: Path, part: int | None,
              key_file: Path | None = None, *, max_bytes: int | None = None,
              warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Copy ``path`` (escaped guest form accepted) into directory ``to`` through ``extract`` (hostile guest safe).

    ``max_bytes`` bounds what may be written; ``warn`` gets each skipped entry's message (already escaped) as it
    happens. Paths in the result are escaped for output; ``files`` lists regular files with their guest sizes."""
    t0 = time.monotonic()
    d = choose_disk(m, disk)
    with disk_view(vault, m, d, key_file) as v:
        vol = fsmod.pick(fsmod.volumes(v.image, v.sandbox), part, d.name)
        rep = fsmod.Fs(v.image, vol, v.sandbox).extract(path, to, max_bytes=max_bytes, warn=warn)
        res = _result(m, v, vol, t0)
    total = rep.bytes
    res.update(path=terminal_safe(path), to=rep.shown, files=[{"path": p, "size": s} for p, s in rep.files],
               links=[{"path": p, "target": t} for p, t in rep.links], skipped=rep.skipped,
               warnings=rep.warnings, bytes=total, bytes_written=rep.written,
               rate_bytes_s=round(total / max(res["duration_s"], 1e-6)))
    return res


# -- mount ------------------------------------------------------------------------------------------------------------

def _mounts_dir() -> Path:
    return private_dir("mounts")


def _state_file(mountpoint: Path) -> Path:
    return _mounts_dir() / (str(mountpoint).strip("/").replace("/", "_") + ".json")


def mount(vault: Vault, m: Manifest, disk: str | None, mountpoint: Path, part: int | None,
          key_file: Path | None = None) -> dict[str, Any]:
    """Mount a point's ext2/3/4 filesystem read-only through fuse2fs; it stays until ``cutpoint umount``.

    The view is served with nbdkit's partition filter, so fuse2fs (which takes no offset) sees the partition alone.
    vfat has no FUSE driver here and a kernel mount would need a loop device: those are refused with the way out.
    ``nosuid,nodev``: a guest's set-uid binaries and device nodes are inert on the host (the kernel also forces
    both on FUSE mounts). fuse2fs itself is not confined: it must mount in the host's namespace, and as libfuse2 it
    cannot take a mount made for it (see docs/design.md).
    """
    t0 = time.monotonic()
    d = choose_disk(m, disk)
    mountpoint = mountpoint.resolve()
    if not mountpoint.is_dir():
        raise NotFoundError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mountpoint) or any(mountpoint.iterdir()):
        raise UsageError(f"mount point {mountpoint} is not an empty, unmounted directory")
    with disk_view(vault, m, d, key_file) as v:
        vol = fsmod.pick(fsmod.volumes(v.image, v.sandbox), part, d.name)
    if vol.fstype not in fsmod.EXT:
        raise UnsupportedError(f"cannot mount {vol.fstype} here: there is no FUSE {vol.fstype} driver and a kernel "
                               f"mount needs a loop device; use 'cutpoint files ls/get {m.vm} {m.point} --disk "
                               f"{d.name}' instead")
    if not _which("fuse2fs"):
        raise UnsupportedError("fuse2fs is not installed (Debian package fuse2fs); use 'cutpoint files' instead")
    filters, fargs = (["partition"], [f"partition={vol.partition}"]) if vol.partition else ([], [])
    args = nbdkit_argv(vault.root, m.vm, m.point, disk=d.name, key_file=key_file, filters=filters, filter_args=fargs)
    fv = FileView(args, _mounts_dir(), keep=True).open()
    try:
        r = subprocess.run(["fuse2fs", "-o", "ro,fakeroot,nosuid,nodev", str(fv.path), str(mountpoint)],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or not os.path.ismount(mountpoint):
            raise UnsupportedError(f"fuse2fs could not mount the filesystem: {(r.stderr or r.stdout).strip()}")
    except BaseException:
        fv.close()
        raise
    state = {"vm": m.vm, "point": m.point, "disk": d.name, "volume": vol.to_json(), "mountpoint": str(mountpoint),
             "view": str(fv.mnt)}
    _state_file(mountpoint).write_text(json.dumps(state))
    return dict(state, duration_s=round(time.monotonic() - t0, 3))


def umount(mountpoint: Path) -> dict[str, Any]:
    mountpoint = mountpoint.resolve()
    sf = _state_file(mountpoint)
    if not sf.exists():
        raise NotFoundError(f"{mountpoint} is not a cutpoint mount")
    state = json.loads(sf.read_text())
    try:
        unmount(mountpoint)
        unmount(Path(state["view"]))
    except CutpointError as exc:
        raise CutpointError(f"{exc}; close programs using {mountpoint} and retry") from exc
    for p in (Path(state["view"]), Path(state["view"] + ".pid"), Path(state["view"] + ".log")):
        if p.is_dir():
            p.rmdir()
        else:
            p.unlink(missing_ok=True)
    sf.unlink()
    return state


def _which(tool: str) -> bool:
    from shutil import which
    return which(tool) is not None
