"""Disk discovery over QMP: which block devices of a running VM are disks to protect, and which are skipped.

Works for disks attached with ``-blockdev`` (user-chosen node names) and with legacy ``-drive`` (QEMU generates node
names such as ``#block125``; the drive id is the stable name). CD-ROMs and empty drives are skipped with a reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .qmp import QmpSession

BITMAP_PREFIX = "cutpoint-"


@dataclass
class Disk:
    """A disk of a running VM as QMP describes it at one moment."""

    name: str               # stable, user-facing: drive id, else user node name, else device id
    node: str               # the top block node; the cut is taken here
    size: int
    driver: str             # format driver of the top node: qcow2, raw, ...
    filename: str
    device: str = ""        # legacy drive id ('' for -blockdev)
    qdev: str = ""
    read_only: bool = False
    cache: dict[str, bool] = field(default_factory=dict)
    bitmaps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cutpoint_bitmaps(self) -> list[str]:
        return [b["name"] for b in self.bitmaps if b["name"].startswith(BITMAP_PREFIX)]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Skipped:
    name: str
    reason: str


@dataclass
class Inventory:
    disks: list[Disk]
    skipped: list[Skipped]


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
            bitmaps=list(inserted.get("dirty-bitmaps", [])),
        ))
    return Inventory(disks, skipped)


def _label(dev: dict[str, Any]) -> str:
    if dev.get("device"):
        return str(dev["device"])
    node = dev.get("inserted", {}).get("node-name", "")
    if node and not node.startswith("#"):
        return str(node)
    qdev = str(dev.get("qdev", ""))
    parts = [p for p in qdev.split("/") if p and p not in ("machine", "virtio-backend")]
    return parts[-1] if parts else node or "disk"
