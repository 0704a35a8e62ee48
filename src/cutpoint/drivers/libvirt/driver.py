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

Here: discovery, the chain, the guest agent and the config; the cut is ``cut.py``, its release ``cleanup.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import libvirt

from ... import workdir as wd
from ...cut.agent import AgentError, GuestAgent
from ...cut.cleanup import sweep_workdirs
from ...cut.disks import Disk, Inventory, Skipped
from ...cut.driver import CutHandle, Driver, DriverSession
from ...cut.naming import BITMAP_PREFIX, bitmap_name
from ...cut.quiesce import Quiesce
from ...errors import HypervisorError
from ..qmp.bitmaps import ours_except, remove_bitmaps
from . import conn as lc
from .agent import LibvirtAgent
from .cleanup import release_cut
from .cut import LibvirtCut, disk_node, take_cut
from .xml import (AGENT_PORT, CACHE_FLAGS, CheckpointInfo, DomainInfo, parse_backup, parse_checkpoint, parse_domain,
                  support_facts, verdict)

DEFAULT_URI = "qemu:///system"


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
            disks.append(Disk(name=d.target, node="", target=d.target, size=size, driver=d.fmt, filename=d.source,
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
        for cp in lc.checkpoints(self.dom, BITMAP_PREFIX):
            if cp.getName() == keep:
                flags = libvirt.VIR_DOMAIN_CHECKPOINT_XML_SIZE | libvirt.VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN
                self._kept = parse_checkpoint(lc.call(f"reading checkpoint {keep}", cp.getXMLDesc, flags))
            else:
                lc.delete_checkpoint(self.dom, cp)
        remove_bitmaps(lc.DomainMonitor(self.dom), ours_except(keep))

    def chain(self, disk: Disk, prev_point: str | None) -> str | None:
        keep = bitmap_name(prev_point) if prev_point else None
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
        node, bitmaps = disk_node(self.dom, disk)
        bm = bitmaps.get(keep)
        if bm is None:
            return (f"dirty bitmap {keep} of {disk.driver} disk {disk.name} is gone: only qcow2 images keep bitmaps, "
                    "so it does not survive a restart of the domain (or it was removed)")
        if bm.get("inconsistent") or not bm.get("recording", True):
            lc.DomainMonitor(self.dom).cmd("block-dirty-bitmap-remove", node=node, name=keep)
            return f"dirty bitmap {keep} of disk {disk.name} is inconsistent or no longer recording"
        return None

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
        cut = LibvirtCut(self.uri, self.domain, workdir, bitmap_name(point_id))
        prev = {d.name: bitmap_name(p) if (p := since.get(d.name)) else None for d in disks}
        try:
            return take_cut(self.dom, self.info(), cut, disks, prev, quiesce)
        except BaseException:
            self.close()
            release_cut(cut, success=False)
            raise

    def close(self) -> None:
        try:
            self.conn.close()
        except libvirt.libvirtError:
            pass  # the daemon went away: nothing of ours is held by a connection


class LibvirtDriver(Driver):
    kind = "libvirt"

    def __init__(self, domain: str, uri: str, vm: str) -> None:
        self.domain, self.uri, self.vm = domain, uri, vm

    def session(self) -> LibvirtDriverSession:
        return LibvirtDriverSession(self.uri, self.domain, self.vm)

    def describe(self) -> Inventory:
        """The domain's disks, running or shut off (``vm add``)."""
        with LibvirtDriverSession(self.uri, self.domain, self.vm, running=False) as s:
            return s.inventory()

    def release(self, handle: CutHandle, success: bool) -> list[str]:
        assert isinstance(handle.state, LibvirtCut)
        return release_cut(handle.state, success)
