"""The libvirt XML cutpoint reads and writes: domain disks, backup and checkpoint requests, and their answers.

Kept apart from the driver so that what cutpoint asks libvirt for (one pull-mode backup job with one checkpoint,
covering exactly the disks it cuts) and what it concludes from a domain definition (which disks are backed up, which
are skipped and why) can be read, and tested, without a running libvirtd.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

from ...errors import HypervisorError

AGENT_PORT = "org.qemu.guest_agent.0"

# libvirt cache mode -> the cache flags QMP's query-block reports, so both drivers describe a disk the same way.
CACHE_FLAGS = {
    "": {"writeback": True, "direct": False, "no-flush": False},           # QEMU's default is writeback
    "default": {"writeback": True, "direct": False, "no-flush": False},
    "writeback": {"writeback": True, "direct": False, "no-flush": False},
    "none": {"writeback": True, "direct": True, "no-flush": False},
    "writethrough": {"writeback": False, "direct": False, "no-flush": False},
    "directsync": {"writeback": False, "direct": True, "no-flush": False},
    "unsafe": {"writeback": True, "direct": False, "no-flush": True},
}


@dataclass
class DomainDisk:
    """One ``<disk>`` of a domain definition, reduced to what decides whether and how it is backed up."""

    target: str
    device: str = "disk"          # disk, cdrom, floppy, lun
    type: str = "file"            # file, block, network, volume, dir, nvme, vhostuser
    fmt: str = "raw"              # <driver type=...>
    source: str = ""              # file or device path, or protocol:name for network disks
    cache: str = ""
    readonly: bool = False
    shareable: bool = False
    transient: bool = False
    alias: str = ""

    @property
    def has_bitmaps(self) -> bool:
        """libvirt checkpoints (persistent bitmaps) exist only for qcow2 images."""
        return self.fmt == "qcow2"


@dataclass
class DomainInfo:
    name: str
    uuid: str
    disks: list[DomainDisk]
    dac_owner: tuple[int, int] | None = None      # uid, gid QEMU runs as (from the live <seclabel model='dac'>)
    agent: str | None = None      # the guest agent channel's state (connected, disconnected, ...); None: no channel


def _parse(text: str, what: str) -> ET.Element:
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise HypervisorError(f"libvirt returned {what} that is not valid XML: {exc}") from exc


def parse_domain(text: str) -> DomainInfo:
    root = _parse(text, "a domain definition")
    disks = []
    for el in root.findall("./devices/disk"):
        tgt = el.find("target")
        if tgt is None or not tgt.get("dev"):
            continue
        drv = el.find("driver")
        src = el.find("source")
        alias = el.find("alias")
        disks.append(DomainDisk(
            target=tgt.get("dev", ""), device=el.get("device", "disk"), type=el.get("type", "file"),
            fmt=(drv.get("type") if drv is not None else None) or "raw",
            source=_source(el.get("type", "file"), src), cache=(drv.get("cache", "") if drv is not None else ""),
            readonly=el.find("readonly") is not None, shareable=el.find("shareable") is not None,
            transient=el.find("transient") is not None, alias=alias.get("name", "") if alias is not None else ""))
    return DomainInfo(name=root.findtext("name", ""), uuid=root.findtext("uuid", ""), disks=disks,
                      dac_owner=_dac_owner(root), agent=_agent_state(root))


def _agent_state(root: ET.Element) -> str | None:
    for tgt in root.findall("./devices/channel/target"):
        if tgt.get("type") == "virtio" and tgt.get("name") == AGENT_PORT:
            return tgt.get("state") or "unknown"
    return None


def _source(kind: str, src: ET.Element | None) -> str:
    if src is None:
        return ""
    if kind == "network":
        return f"{src.get('protocol', 'network')}:{src.get('name', '')}"
    if kind == "volume":
        return f"{src.get('pool', '')}/{src.get('volume', '')}"
    return src.get("file") or src.get("dev") or src.get("dir") or src.get("path") or ""


def _dac_owner(root: ET.Element) -> tuple[int, int] | None:
    for sl in root.findall("seclabel"):
        if sl.get("model") == "dac" and sl.get("relabel", "yes") == "yes":
            m = re.fullmatch(r"\+?(\d+):\+?(\d+)", (sl.findtext("label") or "").strip())
            if m:
                return int(m.group(1)), int(m.group(2))
    return None


def verdict(d: DomainDisk) -> str | None:
    """Why this disk is skipped (not a disk to protect at all), or None when it goes to the support checks.

    Shared, read-only, transient and raw LUN disks are not skipped here: like QMP VMs' they are reported as disks with
    those facts set (``support_facts``) so that ``backup/validation.py`` refuses them unless the user excludes them.
    """
    if d.device in ("cdrom", "floppy"):
        return f"{'CD-ROM' if d.device == 'cdrom' else 'floppy'} drive" + ("" if d.source else " (empty)")
    if not d.source:
        return "empty drive (no medium)"
    return None


def support_facts(d: DomainDisk) -> dict[str, Any]:
    """The ``Disk`` fields the supported-scenario checks read, from the domain XML.

    ``<shareable/>`` is what makes libvirt attach the device with share-rw=on. A raw LUN (``device='lun'``) is SCSI
    pass-through of a host block device or an iSCSI LUN. A block device attached as a plain disk (an LVM volume, say)
    is not flagged: the guest sees a virtio/SCSI disk and every write goes through QEMU's block layer.
    """
    protocol = ""
    if d.device == "lun":
        protocol = "iscsi" if d.type == "network" else "host_device"
    return {"share_rw": d.shareable, "read_only": d.readonly, "transient": d.transient, "protocol": protocol,
            "protocol_file": d.source if d.device == "lun" else "",
            "passthrough": "raw LUN (device='lun', SCSI pass-through)" if d.device == "lun" else ""}


@dataclass
class BackupDisk:
    target: str
    scratch: str
    incremental: str | None = None        # checkpoint name, for an incremental read of a qcow2 disk


def backup_xml(socket: str, disks: list[BackupDisk], others: list[str]) -> str:
    """A pull-mode backup of ``disks`` over a unix socket; every other disk of the domain is left out explicitly."""
    parts = ["<domainbackup mode='pull'>", f"<server transport='unix' socket={quoteattr(socket)}/>", "<disks>"]
    for d in disks:
        inc = f" backupmode='incremental' incremental={quoteattr(d.incremental)}" if d.incremental else ""
        parts.append(f"<disk name={quoteattr(d.target)} backup='yes' type='file'{inc}>"
                     f"<scratch file={quoteattr(d.scratch)}/></disk>")
    parts += [f"<disk name={quoteattr(t)} backup='no'/>" for t in others]
    parts += ["</disks>", "</domainbackup>"]
    return "".join(parts)


def checkpoint_xml(name: str, bitmap_disks: list[str], others: list[str]) -> str:
    parts = [f"<domaincheckpoint><name>{_text(name)}</name>",
             "<description>cutpoint: changes since this restore point</description><disks>"]
    parts += [f"<disk name={quoteattr(t)} checkpoint='bitmap'/>" for t in bitmap_disks]
    parts += [f"<disk name={quoteattr(t)} checkpoint='no'/>" for t in others]
    parts.append("</disks></domaincheckpoint>")
    return "".join(parts)


def _text(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass
class CheckpointDisk:
    mode: str                  # bitmap | no
    bitmap: str = ""
    size: int | None = None    # bytes changed since the checkpoint; libvirt leaves it out when the bitmap is unusable


@dataclass
class CheckpointInfo:
    name: str
    parent: str | None
    disks: dict[str, CheckpointDisk] = field(default_factory=dict)


def parse_checkpoint(text: str) -> CheckpointInfo:
    root = _parse(text, "a checkpoint description")
    disks = {}
    for el in root.findall("./disks/disk"):
        size = el.get("size")
        disks[el.get("name", "")] = CheckpointDisk(el.get("checkpoint", "no"), el.get("bitmap", ""),
                                                   int(size) if size is not None else None)
    return CheckpointInfo(root.findtext("name", ""), root.findtext("./parent/name"), disks)


@dataclass
class BackupExport:
    export: str
    bitmap: str | None


@dataclass
class BackupInfo:
    socket: str
    exports: dict[str, BackupExport]       # disk target -> NBD export and its dirty-bitmap context name


def parse_backup(text: str) -> BackupInfo:
    root = _parse(text, "a backup job description")
    server = root.find("server")
    exports = {}
    for el in root.findall("./disks/disk"):
        if el.get("backup") == "yes":
            exports[el.get("name", "")] = BackupExport(el.get("exportname") or el.get("name") or "",
                                                       el.get("exportbitmap"))
    return BackupInfo(server.get("socket", "") if server is not None else "", exports)
