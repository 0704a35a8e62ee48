"""The libvirt cut: one ``virDomainBackupBegin`` for every disk, plus cutpoint's own export of a non-qcow2 disk.

libvirt attaches a scratch overlay per disk (in cutpoint's work directory), starts all copy-before-write jobs in one
QMP transaction, creates the checkpoint ``cutpoint-<point>`` (a bitmap in every qcow2 disk) in that same
transaction, and exports the frozen disks on an NBD unix socket, also in the work directory. Non-qcow2 disks get an
in-memory bitmap cutpoint adds over QMP just before the cut (a superset of the changes since the cut, which is safe)
and an export cutpoint adds itself beside libvirt's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from ... import workdir as wd
from ...cut.disks import Disk
from ...cut.driver import CutHandle, ReadTarget
from ...cut.naming import BITMAP_PREFIX, EXPORT_PREFIX, XFER_PREFIX
from ...cut.quiesce import Quiesce, atomic
from ...errors import HypervisorError
from . import conn as lc
from .xml import BackupDisk, DomainInfo, backup_xml, checkpoint_xml, parse_backup


@dataclass
class LibvirtCut:
    """Everything one cut put into libvirt, QEMU and the work directory, so that all of it can be taken out."""

    uri: str
    domain: str
    workdir: Path
    checkpoint: str
    started: bool = False
    # non-qcow2 disks: target -> (QMP node, the bitmap to keep if the backup fails, or None)
    plain: dict[str, tuple[str, str | None]] = field(default_factory=dict)


def disk_node(dom: libvirt.virDomain, disk: Disk) -> tuple[str, dict[str, dict[str, Any]]]:
    """The disk's top QEMU node (where the guest's writes land) and its bitmaps by name."""
    for b in lc.block_nodes(dom):
        ins = b["inserted"]
        qdev = [p for p in str(b.get("qdev", "")).split("/") if p]
        if (disk.device and disk.device in qdev) or (disk.filename and ins.get("file") == disk.filename):
            return ins["node-name"], {bm["name"]: bm for bm in ins.get("dirty-bitmaps") or [] if bm.get("name")}
    raise HypervisorError(f"disk {disk.name} of domain {dom.name()!r} is not among QEMU's block devices")


def take_cut(dom: libvirt.virDomain, info: DomainInfo, cut: LibvirtCut, disks: list[Disk],
             prev: dict[str, str | None], quiesce: Quiesce | None) -> CutHandle:
    """``prev[target]``: the checkpoint to read changes since, or None. Records progress on ``cut`` for cleanup."""
    mon = lc.DomainMonitor(dom)
    cut.workdir = prepare_workdir(cut.workdir, info.dac_owner)
    for d in disks:
        if d.driver != "qcow2":
            node, _ = disk_node(dom, d)
            mon.cmd("block-dirty-bitmap-add", node=node, name=cut.checkpoint, persistent=False)
            cut.plain[d.name] = (node, prev[d.name])
    chosen = {d.name for d in disks}
    others = [x.target for x in info.disks if x.target not in chosen]
    socket = cut.workdir / "nbd.sock"
    bx = backup_xml(str(socket), [BackupDisk(d.name, str(cut.workdir / f"{d.name}.scratch"),
                                             prev[d.name] if d.driver == "qcow2" else None) for d in disks], others)
    tracked = [d.name for d in disks if d.driver == "qcow2"]
    cx = checkpoint_xml(cut.checkpoint, tracked, others + [n for n in chosen if n not in tracked]) \
        if tracked else None
    pause_ms = atomic(lambda: lc.call(f"starting the backup of domain {cut.domain!r}", dom.backupBegin, bx, cx, 0),
                      quiesce)
    cut.started = True
    job = parse_backup(lc.call("reading the backup job", dom.backupGetXMLDesc, 0))
    targets = []
    for d in disks:
        exp = job.exports.get(d.name)
        if exp is None:
            raise HypervisorError(f"libvirt's backup job does not export disk {d.name}")
        if d.driver == "qcow2" or not prev[d.name]:
            targets.append(ReadTarget(d, exp.export, exp.bitmap if prev[d.name] else None))
        else:
            targets.append(_export_plain(mon, cut, d, prev[d.name] or ""))
    return CutHandle(socket, targets, pause_ms, state=cut)


def _export_plain(mon: lc.DomainMonitor, cut: LibvirtCut, d: Disk, prev: str) -> ReadTarget:
    """Export a non-qcow2 disk's frozen state with the changes since ``prev`` (libvirt cannot).

    The previous bitmap keeps recording (it must still cover everything if this backup fails), and QEMU exports
    only disabled bitmaps, so its content is copied into a disabled transfer bitmap. That copy is taken just
    after the cut and so also holds writes made since: a superset, which costs a few extra reads, never a miss.
    """
    node = cut.plain[d.name][0]
    scratch = str(cut.workdir / f"{d.name}.scratch")
    fmt_nodes = [n["node-name"] for n in mon.cmd("query-named-block-nodes", flat=True)
                 if n.get("file") == scratch and n.get("drv") != "file"]
    if not fmt_nodes:
        raise HypervisorError(f"cannot find libvirt's scratch node for disk {d.name} ({scratch})")
    xfer = f"{XFER_PREFIX}{cut.checkpoint.removeprefix(BITMAP_PREFIX)}"
    mon.cmd("block-dirty-bitmap-add", node=node, name=xfer, persistent=False, disabled=True)
    mon.cmd("block-dirty-bitmap-merge", node=node, target=xfer, bitmaps=[prev])
    export = f"{EXPORT_PREFIX}{d.name}"
    mon.cmd("block-export-add", type="nbd", id=export, name=export, writable=False, bitmaps=[xfer],
            node_name=fmt_nodes[0])
    return ReadTarget(d, export, xfer)


def prepare_workdir(workdir: Path, owner: tuple[int, int] | None) -> Path:
    """The directory libvirt's QEMU writes the scratch files and the NBD socket in: the point's own, or, when QEMU
    runs as another user, a subdirectory handed to it (``workdir.share_with``). Returns it."""
    wd.make_point_dir(workdir)
    if owner is None or owner[0] == os.geteuid():
        return workdir
    try:
        return wd.share_with(workdir, *owner)
    except PermissionError as exc:
        raise HypervisorError(f"cannot give the work directory {workdir} to the domain's QEMU user (uid {owner[0]}): "
                              "run cutpoint as root for qemu:///system domains") from exc
