"""The libvirt driver: a domain cut through libvirt's pull-mode backup API (see docs/design.md, "libvirt domains").

libvirt owns the QEMU monitor of its domains, so the cut is one ``virDomainBackupBegin`` covering every disk: libvirt
attaches a scratch overlay per disk (in cutpoint's work directory), starts all copy-before-write jobs in one QMP
transaction, creates the checkpoint ``cutpoint-<point>`` (a bitmap in every qcow2 disk) in that same transaction, and
exports the frozen disks on an NBD unix socket, also in the work directory.

Checkpoints follow the chain rules of the QMP driver: after a successful backup of point P the domain holds exactly
one cutpoint checkpoint, ``cutpoint-P``; older ones are deleted (bitmaps included). A failed backup deletes its new
checkpoint, so the previous one, whose bitmaps still record, covers the whole gap. Non-qcow2 disks get the same
semantics from an in-memory bitmap cutpoint adds over QMP just before the cut (a superset of the changes since the
cut, which is safe) and exports itself beside libvirt's exports; it does not survive a restart of the domain, which
the next backup records as the reason for a full read.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from .. import workdir as wd
from ..cut.cleanup import sweep_workdirs
from ..errors import CutpointError, HypervisorError
from . import libvirt_conn as lc
from .agent import AgentError, GuestAgent
from .disks import Disk, Inventory, Skipped
from .driver import CutHandle, Driver, DriverSession, Quiesce, ReadTarget
from .libvirt_agent import LibvirtAgent
from .libvirt_xml import (AGENT_PORT, CACHE_FLAGS, CHECKPOINT_PREFIX, EXPORT_PREFIX, BackupDisk, CheckpointInfo,
                          DomainInfo, backup_xml, checkpoint_name, checkpoint_xml, parse_backup, parse_checkpoint,
                          parse_domain, support_facts, verdict)

DEFAULT_URI = "qemu:///system"
XFER_PREFIX = f"{CHECKPOINT_PREFIX}xfer-"


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


class LibvirtDriverSession(DriverSession):
    def __init__(self, uri: str, domain: str, vm: str, *, running: bool = True) -> None:
        """``running=False`` allows a shut-off domain, for describing it (``vm add``); a cut needs it running."""
        self.uri, self.domain, self.vm = uri, domain, vm
        self.conn = lc.connect(uri)
        try:
            self.dom = lc.lookup(self.conn, domain, uri)
            if running and not self.dom.isActive():
                raise HypervisorError(f"libvirt domain {domain!r} is not running; cutpoint backs up running domains "
                                      f"(virsh -c {uri} start {domain})")
        except BaseException:
            self.conn.close()
            raise
        self._info: DomainInfo | None = None
        self._kept: CheckpointInfo | None = None
        self._settled = False

    # -- discovery -------------------------------------------------------------------------------------------------

    def info(self) -> DomainInfo:
        if self._info is None:
            self._info = parse_domain(lc.call("reading the domain XML", self.dom.XMLDesc, 0))
        return self._info

    def inventory(self) -> Inventory:
        """Disks by target name; the support checks (``backup/validation.py``) then refuse what cannot be cut."""
        disks: list[Disk] = []
        skipped: list[Skipped] = []
        for d in self.info().disks:
            why = verdict(d)
            if why:
                skipped.append(Skipped(d.target, why))
                continue
            facts = support_facts(d)
            try:
                size = int(self.dom.blockInfo(d.target, 0)[0])
            except libvirt.libvirtError as exc:
                if not any(facts.values()):       # a disk to back up must have a size; a refused one may not
                    raise HypervisorError(f"libvirt: cannot read the size of disk {d.target}: {lc.msg(exc)}") from exc
                size = 0
            disks.append(Disk(name=d.target, node=d.target, size=size, driver=d.fmt, filename=d.source,
                              device=d.alias, qdev=d.alias, cache=dict(CACHE_FLAGS.get(d.cache, {})), **facts))
        return Inventory(disks, skipped)

    def capture_config(self) -> dict[str, Any] | None:
        xml = lc.call("reading the domain definition", self.dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)
        return {"type": "libvirt", "connect": self.uri, "domain": self.domain, "xml": xml}

    # -- leftovers and the chain -----------------------------------------------------------------------------------

    def sweep(self, workdirs: Path) -> list[str]:
        removed: list[str] = []
        job = lc.backup_job(self.dom)
        if job is not None:
            socket = parse_backup(job).socket
            if not socket.startswith(str(wd.vm_path(self.vm, workdirs)) + os.sep):
                raise HypervisorError(
                    f"domain {self.domain!r} runs a backup job of another tool (NBD socket {socket or 'TCP'}); "
                    f"libvirt allows one backup job per domain: wait for it, or end it (virsh domjobabort "
                    f"{self.domain})")
            lc.end_backup_job(self.dom)
            removed.append(f"libvirt backup job serving {socket}")
        return removed + sweep_workdirs(workdirs, self.vm)

    def _settle(self, keep: str | None) -> None:
        """Leave only the checkpoint (and bitmaps) of the previous point: others are leftovers of failed runs, of
        deleted points, or bitmaps whose checkpoint metadata was dropped (e.g. a domain undefined and redefined)."""
        self._settled = True
        for cp in lc.checkpoints(self.dom, CHECKPOINT_PREFIX):
            if cp.getName() == keep:
                flags = libvirt.VIR_DOMAIN_CHECKPOINT_XML_SIZE | libvirt.VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN
                self._kept = parse_checkpoint(lc.call(f"reading checkpoint {keep}", cp.getXMLDesc, flags))
            else:
                lc.delete_checkpoint(self.dom, cp)
        lc.remove_bitmaps(self.dom, lambda name: name.startswith(CHECKPOINT_PREFIX) and name != keep)

    def chain(self, disk: Disk, prev_point: str | None) -> str | None:
        keep = checkpoint_name(prev_point) if prev_point else None
        if not self._settled:
            self._settle(keep)
        if disk.driver != "qcow2":
            return self._plain_chain(disk, keep)
        if keep is None:
            return "no previous point"
        if self._kept is None:
            return (f"libvirt checkpoint {keep} is missing (deleted outside cutpoint, or the domain was undefined "
                    "together with its checkpoints)")
        entry = self._kept.disks.get(disk.name)
        if entry is None or entry.mode != "bitmap":
            return f"disk {disk.name} is not tracked by checkpoint {keep} (it was added or replaced since)"
        if entry.size is None:
            return (f"bitmap {keep} of disk {disk.name} is missing or inconsistent (QEMU stopped without saving it, "
                    "or the image was replaced)")
        return None

    def _plain_chain(self, disk: Disk, keep: str | None) -> str | None:
        """A non-qcow2 disk: cutpoint's own in-memory bitmap of the previous point must still be there."""
        if keep is None:
            return "no previous point"
        node, bitmaps = self._node(disk)
        bm = bitmaps.get(keep)
        if bm is None:
            return (f"dirty bitmap {keep} of {disk.driver} disk {disk.name} is gone: only qcow2 images keep bitmaps, "
                    "so it does not survive a restart of the domain (or it was removed)")
        if bm.get("inconsistent") or not bm.get("recording", True):
            lc.qmp(self.dom, "block-dirty-bitmap-remove", node=node, name=keep)
            return f"dirty bitmap {keep} of disk {disk.name} is inconsistent or no longer recording"
        return None

    def _node(self, disk: Disk) -> tuple[str, dict[str, dict[str, Any]]]:
        """The disk's top QEMU node (where the guest's writes land) and its bitmaps by name."""
        for b in lc.block_nodes(self.dom):
            ins = b["inserted"]
            qdev = [p for p in str(b.get("qdev", "")).split("/") if p]
            if (disk.device and disk.device in qdev) or (disk.filename and ins.get("file") == disk.filename):
                return ins["node-name"], {bm["name"]: bm for bm in ins.get("dirty-bitmaps") or [] if bm.get("name")}
        raise HypervisorError(f"disk {disk.name} of domain {self.domain!r} is not among QEMU's block devices")

    # -- the cut ---------------------------------------------------------------------------------------------------

    def agent(self) -> GuestAgent | None:
        state = self.info().agent
        if state is None:
            return None
        if state == "disconnected":
            raise AgentError(f"qemu-ga is not running in the guest: libvirt reports the {AGENT_PORT} channel of "
                             f"domain {self.domain!r} disconnected")
        return LibvirtAgent(self.uri, self.domain)

    def cut(self, disks: list[Disk], point_id: str, since: dict[str, str | None], workdir: Path,
            quiesce: Quiesce | None = None) -> CutHandle:
        cut = LibvirtCut(self.uri, self.domain, workdir, checkpoint_name(point_id))
        try:
            return self._cut(cut, disks, since, quiesce)
        except BaseException:
            self.close()
            release_cut(cut, success=False)
            raise

    def cut_quiesced(self, disks: list[Disk], point_id: str, since: dict[str, str | None], workdir: Path,
                     quiesce: Quiesce) -> CutHandle:
        return self.cut(disks, point_id, since, workdir, quiesce)     # frozen around virDomainBackupBegin only

    def _cut(self, cut: LibvirtCut, disks: list[Disk], since: dict[str, str | None],
             quiesce: Quiesce | None) -> CutHandle:
        cut.workdir = _prepare_workdir(cut.workdir, self.info().dac_owner)
        prev = {d.name: checkpoint_name(p) if (p := since.get(d.name)) else None for d in disks}
        for d in disks:
            if d.driver != "qcow2":
                node, _ = self._node(d)
                lc.qmp(self.dom, "block-dirty-bitmap-add", node=node, name=cut.checkpoint, persistent=False)
                cut.plain[d.name] = (node, prev[d.name])
        chosen = {d.name for d in disks}
        others = [x.target for x in self.info().disks if x.target not in chosen]
        socket = cut.workdir / "nbd.sock"
        bx = backup_xml(str(socket), [BackupDisk(d.name, str(cut.workdir / f"{d.name}.scratch"),
                                                 prev[d.name] if d.driver == "qcow2" else None) for d in disks], others)
        tracked = [d.name for d in disks if d.driver == "qcow2"]
        cx = checkpoint_xml(cut.checkpoint, tracked, others + [n for n in chosen if n not in tracked]) \
            if tracked else None
        if quiesce is not None:
            quiesce.freeze()
        try:
            t0 = time.perf_counter()
            lc.call(f"starting the backup of domain {self.domain!r}", self.dom.backupBegin, bx, cx, 0)
            pause_ms = (time.perf_counter() - t0) * 1000.0
        finally:
            if quiesce is not None:
                quiesce.thaw()
        cut.started = True
        job = parse_backup(lc.call("reading the backup job", self.dom.backupGetXMLDesc, 0))
        targets = []
        for d in disks:
            exp = job.exports.get(d.name)
            if exp is None:
                raise HypervisorError(f"libvirt's backup job does not export disk {d.name}")
            if d.driver == "qcow2" or not prev[d.name]:
                targets.append(ReadTarget(d, exp.export, exp.bitmap if prev[d.name] else None))
            else:
                targets.append(self._export_plain(cut, d, prev[d.name] or ""))
        return CutHandle(socket, targets, pause_ms, state=cut)

    def _export_plain(self, cut: LibvirtCut, d: Disk, prev: str) -> ReadTarget:
        """Export a non-qcow2 disk's frozen state with the changes since ``prev`` (libvirt cannot).

        The previous bitmap keeps recording (it must still cover everything if this backup fails), and QEMU exports
        only disabled bitmaps, so its content is copied into a disabled transfer bitmap. That copy is taken just
        after the cut and so also holds writes made since: a superset, which costs a few extra reads, never a miss.
        """
        node = cut.plain[d.name][0]
        scratch = str(cut.workdir / f"{d.name}.scratch")
        fmt_nodes = [n["node-name"] for n in lc.qmp(self.dom, "query-named-block-nodes", flat=True)
                     if n.get("file") == scratch and n.get("drv") != "file"]
        if not fmt_nodes:
            raise HypervisorError(f"cannot find libvirt's scratch node for disk {d.name} ({scratch})")
        xfer = f"{XFER_PREFIX}{cut.checkpoint.removeprefix(CHECKPOINT_PREFIX)}"
        lc.qmp(self.dom, "block-dirty-bitmap-add", node=node, name=xfer, persistent=False, disabled=True)
        lc.qmp(self.dom, "block-dirty-bitmap-merge", node=node, target=xfer, bitmaps=[prev])
        export = f"{EXPORT_PREFIX}{d.name}"
        lc.qmp(self.dom, "block-export-add", type="nbd", id=export, name=export, writable=False,
               bitmaps=[xfer], **{"node-name": fmt_nodes[0]})
        return ReadTarget(d, export, xfer)

    def close(self) -> None:
        try:
            self.conn.close()
        except libvirt.libvirtError:
            pass  # the daemon went away: nothing of ours is held by a connection


def _prepare_workdir(workdir: Path, owner: tuple[int, int] | None) -> Path:
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


def release_cut(cut: LibvirtCut, success: bool) -> list[str]:
    """End the job, settle checkpoints and bitmaps, delete the work directory. Every step is tried; returns problems.

    Success: every cutpoint checkpoint but the new one goes. Failure: the new one goes, so the previous checkpoint,
    still recording, covers the gap. A domain that died mid-read keeps only checkpoint metadata to drop.
    """
    problems: list[str] = []
    try:
        conn = lc.connect(cut.uri)
    except HypervisorError as exc:
        problems.append(str(exc))
        conn = None
    if conn is not None:
        try:
            dom = lc.lookup(conn, cut.domain, cut.uri)
            active = bool(dom.isActive())
            if active and cut.started:
                _step(problems, lambda: lc.end_backup_job(dom))
            _step(problems, lambda: _settle_checkpoints(dom, cut.checkpoint, success))
            if active:
                for target, (node, prev) in cut.plain.items():
                    keep = cut.checkpoint if success else prev
                    _step(problems, lambda node=node, keep=keep: _drop_bitmaps(dom, node, keep))
        except CutpointError as exc:
            problems.append(str(exc))
        finally:
            conn.close()
    problems += wd.remove_workdir(cut.workdir)
    return problems


def _settle_checkpoints(dom: libvirt.virDomain, new: str, success: bool) -> None:
    for cp in lc.checkpoints(dom, CHECKPOINT_PREFIX):
        is_new = cp.getName() == new
        if (success and not is_new) or (not success and is_new):
            lc.delete_checkpoint(dom, cp)


def _drop_bitmaps(dom: libvirt.virDomain, node: str, keep: str | None) -> None:
    for b in lc.block_nodes(dom):
        if b["inserted"]["node-name"] == node:
            for bm in b["inserted"].get("dirty-bitmaps") or []:
                if bm.get("name", "").startswith(CHECKPOINT_PREFIX) and bm["name"] != keep:
                    lc.qmp(dom, "block-dirty-bitmap-remove", node=node, name=bm["name"])


def _step(problems: list[str], fn: Any) -> None:
    try:
        fn()
    except CutpointError as exc:
        problems.append(str(exc))


class LibvirtDriver(Driver):
    kind = "libvirt"

    def __init__(self, domain: str, uri: str, vm: str) -> None:
        self.domain, self.uri, self.vm = domain, uri, vm

    def session(self) -> LibvirtDriverSession:
        return LibvirtDriverSession(self.uri, self.domain, self.vm)

    def release(self, handle: CutHandle, success: bool) -> list[str]:
        assert isinstance(handle.state, LibvirtCut)
        return release_cut(handle.state, success)
