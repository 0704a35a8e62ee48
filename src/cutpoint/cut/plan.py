"""The plan of a QMP cut: per disk, its fleecing overlay, the node, job and export names, and the bitmaps, and a
record of what the cut put into QEMU so far, so that cleanup takes out exactly that (``drivers/qmp/cleanup.py``).

Pure data: the QMP driver carries it out (``drivers/qmp/cut.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..workdir import make_point_dir
from .disks import Disk
from .naming import EXPORT_PREFIX, JOB_PREFIX, NODE_PREFIX, bitmap_name


@dataclass
class FleeceDisk:
    disk: Disk
    index: int
    overlay: Path
    new_bitmap: str
    prev_bitmap: str | None        # previous point's bitmap, disabled by the cut; None for a full read

    @property
    def node(self) -> str:
        return f"{NODE_PREFIX}{self.index}"

    @property
    def job(self) -> str:
        return f"{JOB_PREFIX}{self.index}"

    @property
    def export(self) -> str:
        return f"{EXPORT_PREFIX}{self.index}"


@dataclass
class Cut:
    """Everything a cut put into QEMU and on disk, so that it can all be taken out again."""

    qmp: Path
    workdir: Path
    nbd_socket: Path
    disks: list[FleeceDisk]
    pause_ms: float = 0.0
    started_nbd: bool = False
    attached: list[str] = field(default_factory=list)      # overlay nodes added
    jobs: list[str] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)
    transaction_done: bool = False


def plan_cut(qmp: Path, workdir: Path, disks: list[Disk], point_id: str,
             prev_bitmaps: dict[str, str | None]) -> Cut:
    make_point_dir(workdir)                 # private, every component checked (workdir.py)
    fleece = [FleeceDisk(d, i, workdir / f"fleece-{i}.qcow2", bitmap_name(point_id), prev_bitmaps.get(d.name))
              for i, d in enumerate(disks)]
    return Cut(qmp=qmp, workdir=workdir, nbd_socket=workdir / "nbd.sock", disks=fleece)
