"""What a restore returns, one type per target, and the JSON each gives at the edge (``restore --json``, jobs).

The JSON of each type is the contract ``cutpoint restore --json`` has always printed, key for key (its ``mode`` tells
the kinds apart for scripts); code inside cutpoint tells them apart by type, never by that key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .images import RestoredFile


@dataclass(frozen=True)
class NewDisk:
    """An image a restore wrote for a new VM."""

    name: str
    path: Path
    size: int
    format: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "size": self.size, "format": self.format}

    @classmethod
    def of(cls, f: RestoredFile, fmt: str) -> "NewDisk":
        return cls(f.disk, f.path, f.size, fmt)


@dataclass(frozen=True)
class ReplacedDisk:
    """One disk file put back to the point in place (the replace engine's account of it)."""

    disk: str
    path: Path
    format: str
    size: int
    resized_from: int | None
    bytes_compared: int
    bytes_written: int
    chunks_written: int
    chunks: int

    @classmethod
    def from_engine(cls, r: dict[str, Any]) -> "ReplacedDisk":
        return cls(disk=r["disk"], path=Path(r["path"]), format=r["format"], size=r["size"],
                   resized_from=r["resized_from"], bytes_compared=r["bytes_compared"],
                   bytes_written=r["bytes_written"], chunks_written=r["chunks_written"], chunks=r["chunks"])

    def to_json(self) -> dict[str, Any]:
        return {"disk": self.disk, "path": str(self.path), "format": self.format, "size": self.size,
                "resized_from": self.resized_from, "bytes_compared": self.bytes_compared,
                "bytes_written": self.bytes_written, "chunks_written": self.chunks_written, "chunks": self.chunks}


@dataclass(frozen=True)
class ImagesResult:
    vm: str
    point: str
    files: list[RestoredFile]

    @property
    def nbytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {"mode": "images", "vm": self.vm, "point": self.point, "bytes": self.nbytes,
                "files": [{"disk": f.disk, "path": str(f.path), "size": f.size} for f in self.files]}


@dataclass(frozen=True)
class NewVmResult:
    """A QMP VM's point as a new QEMU VM (``start.sh``, ``vm.json``; started on request)."""

    vm: str
    point: str
    new_vm: str
    dir: Path
    disks: list[NewDisk]
    script: Path
    config: Path
    config_source: str | None
    qmp: Path
    started: bool
    pid: int | None
    registered: bool
    warnings: list[str]
    restore_s: float
    duration_s: float
    rate_bytes_s: int

    @property
    def nbytes(self) -> int:
        return sum(d.size for d in self.disks)

    def to_json(self) -> dict[str, Any]:
        return {"mode": "new-vm", "vm": self.vm, "point": self.point, "new_vm": self.new_vm, "dir": str(self.dir),
                "disks": [d.to_json() for d in self.disks], "script": str(self.script), "config": str(self.config),
                "config_source": self.config_source, "qmp": str(self.qmp), "started": self.started,
                "pid": self.pid, "registered": self.registered, "warnings": list(self.warnings),
                "bytes": self.nbytes, "restore_s": self.restore_s, "duration_s": self.duration_s,
                "rate_bytes_s": self.rate_bytes_s}


@dataclass(frozen=True)
class NewDomainResult:
    """A libvirt domain's point as a new domain (defined; started and protected on request)."""

    vm: str
    point: str
    domain: str
    connect: str
    dir: Path
    disks: list[NewDisk]
    dropped: list[str]
    started: bool
    registered: bool
    duration_s: float

    nbytes = 0          # as before: a new domain's job records no byte count

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": "new-domain", "vm": self.vm, "point": self.point, "domain": self.domain,
                               "connect": self.connect, "dir": str(self.dir),
                               "disks": [d.to_json() for d in self.disks], "dropped": list(self.dropped),
                               "started": self.started, "duration_s": self.duration_s}
        if self.registered:
            out["registered"] = True
        return out


@dataclass(frozen=True)
class ReplaceResult:
    """A QMP VM's own disk files put back to the point, only differing chunks written."""

    vm: str
    point: str
    disks: list[ReplacedDisk]
    duration_s: float
    rate_bytes_s: int

    nbytes = 0

    @property
    def bytes_compared(self) -> int:
        return sum(d.bytes_compared for d in self.disks)

    @property
    def bytes_written(self) -> int:
        return sum(d.bytes_written for d in self.disks)

    def to_json(self) -> dict[str, Any]:
        return {"mode": "replace", "vm": self.vm, "point": self.point, "disks": [d.to_json() for d in self.disks],
                "bytes_compared": self.bytes_compared, "bytes_written": self.bytes_written,
                "duration_s": self.duration_s, "rate_bytes_s": self.rate_bytes_s}


@dataclass(frozen=True)
class ReplaceDomainResult:
    """A shut-off libvirt domain's disk files put back to the point; its cutpoint checkpoints dropped."""

    vm: str
    point: str
    domain: str
    connect: str
    disks: list[ReplacedDisk]
    checkpoints_dropped: list[str]
    duration_s: float

    nbytes = 0

    def to_json(self) -> dict[str, Any]:
        return {"mode": "replace-domain", "vm": self.vm, "point": self.point, "domain": self.domain,
                "connect": self.connect,
                "disks": [{"disk": d.disk, "path": str(d.path), "format": d.format, "size": d.size}
                          for d in self.disks],
                "checkpoints_dropped": list(self.checkpoints_dropped), "duration_s": self.duration_s}


@dataclass(frozen=True)
class InstantResult:
    """A new VM running on local overlays backed by the point over NBD, streaming in the background."""

    vm: str
    point: str
    new_vm: str
    dir: Path
    qmp: Path
    pid: int
    server_pid: int
    socket: Path
    jobs: list[str]
    disks: list[NewDisk]
    script: Path
    config: Path
    warnings: list[str]
    time_to_running_s: float
    duration_s: float
    source: str = ""                # the vault it streams from (a directory or s3://…)
    fetch_bytes: int = 0            # stored bytes streaming reads from there: its cost on object storage

    @property
    def nbytes(self) -> int:
        return sum(d.size for d in self.disks)

    def to_json(self) -> dict[str, Any]:
        return {"mode": "instant", "vm": self.vm, "point": self.point, "new_vm": self.new_vm, "dir": str(self.dir),
                "qmp": str(self.qmp), "pid": self.pid, "server_pid": self.server_pid, "socket": str(self.socket),
                "jobs": list(self.jobs), "disks": [d.to_json() for d in self.disks], "script": str(self.script),
                "config": str(self.config), "warnings": list(self.warnings), "bytes": self.nbytes,
                "time_to_running_s": self.time_to_running_s, "duration_s": self.duration_s,
                "source": self.source, "fetch_bytes": self.fetch_bytes}


@dataclass(frozen=True)
class FilesResult:
    """Files copied out of a point's guest filesystem; ``detail`` is ``browse.get_files``' account, as it gives it."""

    vm: str
    point: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return int(self.detail.get("bytes") or 0)

    def to_json(self) -> dict[str, Any]:
        return dict(self.detail)


RestoreResult = (ImagesResult | NewVmResult | NewDomainResult | ReplaceResult | ReplaceDomainResult
                 | InstantResult | FilesResult)


def job_detail(res: dict[str, Any]) -> dict[str, Any]:
    """What a restore job keeps of its JSON result: the scalars (mode, dir, bytes written, ...) and the per-disk or
    per-file lists, not the command line or the QEMU config."""
    return {k: v for k, v in res.items() if isinstance(v, (str, int, float, bool, type(None)))
            or k in ("files", "disks")}
