"""Disk discovery over QMP: which block devices of a running VM are disks to protect, and which are skipped.

Works for disks attached with ``-blockdev`` (user-chosen node names) and with legacy ``-drive`` (QEMU generates node
names such as ``#block125``; the drive id is the stable name). CD-ROMs and empty drives are skipped with a reason.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ...cut.disks import Disk, Inventory, Skipped
from ...errors import QmpCommandError
from .qmp import QmpSession


def discover(session: QmpSession) -> Inventory:
    """List the VM's disks and the block devices that are not backed up, with why."""
    disks: list[Disk] = []
    skipped: list[Skipped] = []
    for dev in session.cmd("query-block"):
        label = _label(dev)
        inserted = dev.get("inserted")
        is_cdrom = dev.get("removable") and "tray_open" in dev
        if is_cdrom:
            skipped.append(Skipped(label, "CD-ROM drive" + ("" if inserted else " (empty)")))
            continue
        if not inserted:
            if dev.get("qdev"):
                skipped.append(Skipped(label, "empty drive (no medium)"))
            continue  # a board's unused default slot (e.g. sd0): not a device of the VM's
        image = inserted.get("image", {})
        disks.append(Disk(
            name=label,
            node=inserted["node-name"],
            size=int(image.get("virtual-size", 0)),
            driver=inserted.get("drv", ""),
            filename=inserted.get("file", ""),
            device=dev.get("device", ""),
            qdev=dev.get("qdev", ""),
            read_only=bool(inserted.get("ro")),
            cache=dict(inserted.get("cache", {})),
            # named only: a running block job (ours or another tool's) shows an anonymous bitmap here
            bitmaps=[b for b in inserted.get("dirty-bitmaps", []) if b.get("name")],
        ))
        disks[-1].transient = int(inserted.get("backing_file_depth", 0)) > 0   # confirmed by _support_facts
    _support_facts(session, disks)
    return Inventory(disks, skipped)


PROTOCOLS = {"file", "host_device", "host_cdrom", "iscsi", "nbd", "rbd", "ssh", "nfs", "gluster", "http", "https",
             "ftp", "ftps", "null-co", "null-aio", "nvme", "vxhs", "blkio"}
TEMP_OVERLAY = re.compile(r"vl\.[A-Za-z0-9]{6}")
# SCSI pass-through devices: the guest's SCSI commands (writes included) go to the host device by SG_IO, past the
# block layer where the cut, the dirty bitmap and copy-before-write live. A host block device (an LVM volume, an
# iSCSI LUN through QEMU's iscsi driver) under an emulated disk (virtio-blk, scsi-hd, ide-hd) is not one of them.
PASSTHROUGH_MODELS = {"scsi-block": "SCSI pass-through device (scsi-block)",
                      "scsi-generic": "SCSI pass-through device (scsi-generic)"}


def _support_facts(session: QmpSession, disks: list[Disk]) -> None:
    """Fill share_rw, protocol and transient from QMP.

    The protocol node is the one below the top node with the same filename (or, for a ``json:`` filename, the
    ``file`` child it spells out). ``snapshot=on`` shows as a top node with a backing image whose protocol file is
    QEMU's temporary ``vl.XXXXXX`` (in $TMPDIR or /var/tmp). ``share-rw`` is a property of the guest device.
    """
    nodes = session.cmd("query-named-block-nodes", flat=True)
    for d in disks:
        top: dict[str, Any] = next((n for n in nodes if n.get("node-name") == d.node), {})
        fname = str(top.get("file", d.filename))
        proto, pfile = "", fname
        if fname.startswith("json:"):
            try:
                child = json.loads(fname[5:]).get("file", {})
                proto, pfile = str(child.get("driver", "")), str(child.get("filename", ""))
            except (ValueError, AttributeError):
                pass
        elif top.get("drv") in PROTOCOLS:
            proto = str(top["drv"])
        else:
            same = [n for n in nodes if n.get("file") == fname and n.get("node-name") != d.node]
            proto = str(next((n["drv"] for n in same if n.get("drv") in PROTOCOLS), same[0]["drv"] if same else ""))
        d.protocol, d.protocol_file = proto, pfile
        d.transient = d.transient and bool(TEMP_OVERLAY.fullmatch(pfile.rsplit("/", 1)[-1]))
        if d.qdev:
            try:
                d.share_rw = bool(session.cmd("qom-get", path=d.qdev, property="share-rw"))
            except QmpCommandError:
                d.share_rw = None    # QEMU's answer: a device without the property (or gone meanwhile): unknown
            try:
                d.model = str(session.cmd("qom-get", path=device_path(d.qdev), property="type"))
            except QmpCommandError:
                d.model = ""
            d.passthrough = PASSTHROUGH_MODELS.get(d.model, "")


def device_path(qdev: str) -> str:
    """The QOM path of a disk's device: ``.../virtio-backend`` is the virtio proxy's child, not the device."""
    if not qdev:
        return ""
    if not qdev.startswith("/"):
        return f"/machine/peripheral/{qdev}"
    return qdev.removesuffix("/virtio-backend")


def _label(dev: dict[str, Any]) -> str:
    if dev.get("device"):
        return str(dev["device"])
    node = dev.get("inserted", {}).get("node-name", "")
    if node and not node.startswith("#"):
        return str(node)
    qdev = str(dev.get("qdev", ""))
    parts = [p for p in qdev.split("/") if p and p not in ("machine", "virtio-backend")]
    return parts[-1] if parts else node or "disk"
