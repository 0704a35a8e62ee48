"""The restore driver for libvirt domains: a new domain beside the original, or the shut-off original's own disks.

Every point of a libvirt domain carries the domain's definition (``vm_config``, captured by the libvirt driver at
the cut). A new domain is that definition rewritten (``domain_xml.py``) onto the restored images; it is defined,
and started on request. The shared new-VM steps (name, directory, registration, undoing all on failure) are
``new_vm.py``'s; this driver only defines, starts and undefines.

Replacing uses the same engine as a QMP VM's replace (``replace.replace_planned``): nothing is written unless the
vault holds every chunk of the point, then each disk file is compared chunk by chunk and only what differs is
written, in place (owner and mode stay). The domain's cutpoint checkpoints are dropped: the next backup reads in full
with that reason.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
import time
from pathlib import Path

import libvirt

from ..cut.naming import BITMAP_PREFIX as CHECKPOINT_PREFIX
from ..drivers.libvirt import conn as lc
from ..drivers.libvirt.xml import parse_domain
from ..errors import NotFoundError, UnsupportedError, UsageError
from ..vault.manifest import DiskManifest, Manifest
from ..vault.vault import Vault
from ..vmconfig import LibvirtVmConfig
from .domain_xml import new_domain_xml
from .driver import NewMachine, NewVmDone, Registration, RestoreDriver
from .images import Progress, RestoredFile
from .replace import replace_planned
from .results import InstantResult, NewDisk, NewDomainResult, ReplacedDisk, ReplaceDomainResult
from .targets import Instant

__all__ = ["LibvirtRestoreDriver", "new_domain_xml"]


class LibvirtRestoreDriver(RestoreDriver):
    kind = "libvirt"

    def __init__(self, vault: Vault, m: Manifest, cfg: LibvirtVmConfig) -> None:
        self.cfg = cfg

    def new_machine(self, vault: Vault, m: Manifest, name: str) -> NewMachine:
        return _DomainMachine(m, self.cfg, name)

    def instant(self, vault: Vault, m: Manifest, target: Instant) -> InstantResult:
        raise UsageError("--instant is not available for libvirt domains yet; use --new-vm NAME --start")

    def replace(self, vault: Vault, m: Manifest, progress: Progress | None) -> ReplaceDomainResult:
        """Put point ``m`` onto the disks of the shut-off domain, matched by target name (vda, sdb, ...)."""
        t0 = time.monotonic()
        try:
            rec = vault.catalog.vm(m.vm)
            domain, uri = rec.address, str(rec.settings.get("connect") or self.cfg.connect)
        except NotFoundError:
            domain, uri = self.cfg.domain or m.vm, self.cfg.connect
        conn = lc.connect(uri)
        try:
            dom = lc.lookup(conn, domain, uri)
            if dom.isActive():
                raise UsageError(f"libvirt domain {domain!r} is running; shut it down first (virsh -c {uri} "
                                 f"shutdown {domain}), then retry the replace")
            plan = _plan(m, domain, lc.call("reading the domain XML", dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE))
            done = [ReplacedDisk.from_engine(r) for r in replace_planned(vault, m, plan, progress)]
            dropped = [cp.getName() for cp in lc.checkpoints(dom, CHECKPOINT_PREFIX)]
            for cp in lc.checkpoints(dom, CHECKPOINT_PREFIX):
                lc.call(f"dropping checkpoint {cp.getName()}", cp.delete,
                        libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
        finally:
            conn.close()
        return ReplaceDomainResult(vm=m.vm, point=m.point, domain=domain, connect=uri, disks=done,
                                   checkpoints_dropped=dropped, duration_s=round(time.monotonic() - t0, 3))


def _plan(m: Manifest, domain: str, xml: str) -> list[tuple[DiskManifest, Path, str]]:
    """Each of the point's disks with the domain's current image file for it and that file's format."""
    current = {d.target: d for d in parse_domain(xml).disks}
    plan = []
    for d in m.disks:
        cur = current.get(d.name)
        if cur is None:
            raise UsageError(f"domain {domain!r} has no disk {d.name}; the point's disks are "
                             f"{', '.join(x.name for x in m.disks)}")
        if cur.type != "file" or not cur.source.startswith("/"):
            raise UnsupportedError(f"disk {d.name} of domain {domain!r} is not a local image file ({cur.type} "
                                   f"{cur.source}); restore it with --to DIR and copy it in place")
        plan.append((d, Path(cur.source), cur.fmt or "raw"))      # libvirt's default format for a file is raw
    return plan


class _DomainMachine(NewMachine):
    def __init__(self, m: Manifest, cfg: LibvirtVmConfig, name: str) -> None:
        self.m, self.cfg, self.name = m, cfg, name
        self.uri = cfg.connect
        self.conn: libvirt.virConnect | None = None
        self.dom: libvirt.virDomain | None = None
        self.disks: list[NewDisk] = []
        self.dropped: list[str] = []

    def check(self, vmdir: Path) -> None:
        if self.uri.startswith("qemu:///system"):
            _check_reachable(vmdir)
        self.conn = lc.connect(self.uri)
        try:
            lc.lookup(self.conn, self.name, self.uri)
        except NotFoundError:
            return
        raise UsageError(f"a libvirt domain named {self.name!r} already exists at {self.uri}; choose another name")

    def define(self, vmdir: Path, images: list[RestoredFile], fmt: str) -> None:
        assert self.conn is not None
        if self.uri.startswith("qemu:///system"):
            _hand_to_qemu(vmdir, images)
        self.disks = [NewDisk.of(f, fmt) for f in images]
        xml, self.dropped = new_domain_xml(self.cfg.xml, self.name, {f.disk: str(f.path) for f in images}, fmt,
                                           vmdir, f"restored by cutpoint from VM {self.m.vm!r}, point {self.m.point}")
        self.dom = lc.call(f"defining domain {self.name!r}", self.conn.defineXML, xml)

    def start(self) -> None:
        assert self.dom is not None
        lc.call(f"starting domain {self.name!r}", self.dom.create)

    def registration(self) -> Registration:
        return Registration("libvirt", self.name, {"connect": self.uri,
                                                   "restored_from": {"vm": self.m.vm, "point": self.m.point}})

    def discard(self) -> None:
        if self.dom is None:
            return
        try:
            if self.dom.isActive():
                self.dom.destroy()
            self.dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                                   | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                                   | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError:
            pass  # best effort while another error is on its way to the user

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def result(self, done: NewVmDone) -> NewDomainResult:
        return NewDomainResult(vm=self.m.vm, point=self.m.point, domain=self.name, connect=self.uri, dir=done.dir,
                               disks=self.disks, dropped=self.dropped, started=done.started,
                               registered=done.registered, duration_s=round(done.duration_s, 3))


QEMU_CONF = Path("/etc/libvirt/qemu.conf")


def _qemu_ids() -> tuple[int, int]:
    """The uid and gid libvirt's system QEMU runs as: ``user``/``group`` of qemu.conf, else Debian's
    ``libvirt-qemu``; root (0, 0) when neither names an account here."""
    names = {"user": "libvirt-qemu", "group": "libvirt-qemu"}
    try:
        for line in QEMU_CONF.read_text(errors="replace").splitlines():
            if m := re.match(r'\s*(user|group)\s*=\s*"([^"]+)"', line):
                names[m.group(1)] = m.group(2)
    except OSError:
        pass                                    # no readable qemu.conf: libvirt's defaults
    try:
        uid = int(names["user"]) if names["user"].isdigit() else pwd.getpwnam(names["user"]).pw_uid
        gid = int(names["group"]) if names["group"].isdigit() else grp.getgrnam(names["group"]).gr_gid
    except KeyError:
        return 0, 0
    return uid, gid


def _hand_to_qemu(vmdir: Path, images: list[RestoredFile]) -> None:
    """libvirt's system QEMU runs as its own user and probes each image as that user before it starts the domain,
    so the private restore (files 0600, directory 0700, root's) is handed to it as libvirt itself would at start:
    the images become the QEMU user's (still 0600) and the directory enterable by its group only (0710)."""
    uid, gid = _qemu_ids()
    if uid == 0:
        return
    for f in images:
        fd = os.open(f.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchown(fd, uid, gid)
        finally:
            os.close(fd)
    os.chown(vmdir, 0, gid, follow_symlinks=False)
    os.chmod(vmdir, 0o710)


def _check_reachable(to: Path) -> None:
    """qemu:///system runs QEMU as its own user, which must be able to enter every directory above the images."""
    for p in [to, *to.parents]:
        if p.exists() and p != to and not p.stat().st_mode & stat.S_IXOTH:
            raise UsageError(f"libvirt's QEMU user could not reach {to}: {p} is not searchable by other users; "
                             f"choose a --to under a directory it can enter (e.g. /var/lib/libvirt/images/NAME) or "
                             f"chmod o+x {p}")
