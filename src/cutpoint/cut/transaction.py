"""The cut: one QMP ``transaction`` that freezes a point in time across all disks of a running VM.

For every disk an empty qcow2 *fleecing overlay* is attached with the live disk as its backing node. One transaction
then, per disk, adds a fresh dirty bitmap (it records what changes after this cut, for the next incremental),
disables the previous point's bitmap (so it holds exactly the changes between the two cuts), and starts
``blockdev-backup sync=none`` into the overlay: from that instant QEMU copies old data into the overlay before the
guest overwrites it, so reading the overlay gives the disk as it was at the cut. QEMU drains all disks for the
transaction, which makes the cut atomic across disks; the guest pauses only for that round trip (``pause_ms``).

The overlays are then exported read-only over QEMU's NBD server for the reader, while the guest runs on.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TYPE_CHECKING

from ..workdir import make_point_dir
from ..errors import CutpointError, HypervisorError
from ..hypervisor.disks import BITMAP_PREFIX, Disk
from ..hypervisor.qmp import QmpSession

if TYPE_CHECKING:
    from ..hypervisor.driver import Quiesce

NODE_PREFIX = "cutpoint-fleece-"
JOB_PREFIX = "cutpoint-job-"
EXPORT_PREFIX = "cutpoint-export-"


def bitmap_name(point_id: str) -> str:
    """The bitmap that records changes since the cut of ``point_id``."""
    return f"{BITMAP_PREFIX}{point_id}"


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


def take_cut(session: QmpSession, cut: Cut, quiesce: "Quiesce | None" = None) -> None:
    """Attach overlays, run the transaction, export the frozen state. Records progress on ``cut`` for cleanup.

    ``quiesce`` (the guest-agent freeze) brackets the transaction alone, so the guest's filesystems stay frozen
    only for that round trip, not for the overlay and export set-up."""
    for fd in cut.disks:
        _create_overlay(fd.overlay, fd.disk.size)
        session.cmd("blockdev-add", driver="qcow2", node_name=fd.node,
                    file={"driver": "file", "filename": str(fd.overlay)}, backing=fd.disk.node)
        cut.attached.append(fd.node)

    actions: list[dict[str, object]] = []
    for fd in cut.disks:
        actions.append({"type": "block-dirty-bitmap-add", "data": {
            "node": fd.disk.node, "name": fd.new_bitmap, "persistent": fd.disk.driver == "qcow2"}})
        if fd.prev_bitmap:
            actions.append({"type": "block-dirty-bitmap-disable", "data": {
                "node": fd.disk.node, "name": fd.prev_bitmap}})
        actions.append({"type": "blockdev-backup", "data": {
            "device": fd.disk.node, "target": fd.node, "sync": "none", "job-id": fd.job}})
    if quiesce is not None:
        quiesce.freeze()
    try:
        t0 = time.perf_counter()
        session.cmd("transaction", actions=actions)
        cut.pause_ms = (time.perf_counter() - t0) * 1000.0
    finally:
        if quiesce is not None:
            quiesce.thaw()
    cut.transaction_done = True
    cut.jobs = [fd.job for fd in cut.disks]

    try:
        session.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": str(cut.nbd_socket)}})
    except CutpointError as exc:
        if "already running" in str(exc).lower():
            raise HypervisorError(
                "this QEMU already runs an NBD server started by another tool, and QEMU allows only one; stop "
                "that tool's export (nbd-server-stop) and retry") from exc
        raise
    cut.started_nbd = True
    for fd in cut.disks:
        args: dict[str, Any] = {"type": "nbd", "id": fd.export, "node_name": fd.node, "name": fd.export,
                                   "writable": False}
        if fd.prev_bitmap:
            args["bitmaps"] = [fd.prev_bitmap]
        session.cmd("block-export-add", **args)
        cut.exports.append(fd.export)


def _create_overlay(path: Path, size: int) -> None:
    try:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size)],
                       check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise CutpointError(f"cannot create fleecing overlay {path}: {exc.stderr.strip()}") from exc
