"""A VM's disks as a driver reports them: the one description discovery, validation, the cut and the manifest share.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .naming import is_ours


@dataclass
class Disk:
    """A disk of a running VM as the hypervisor describes it at one moment."""

    name: str               # stable, user-facing: drive id, else user node name, else device id; libvirt: target
    node: str               # QMP: the top block node, where the cut is taken; libvirt: '' (libvirt picks the node)
    size: int
    driver: str             # format driver of the top node: qcow2, raw, ...
    filename: str
    device: str = ""        # legacy drive id ('' for -blockdev); libvirt: the device alias
    qdev: str = ""
    read_only: bool = False
    cache: dict[str, bool] = field(default_factory=dict)
    bitmaps: list[dict[str, Any]] = field(default_factory=list)
    # Facts for the supported-scenario checks (backup/validation.py); drivers fill what they can tell.
    share_rw: bool | None = None    # the device lets other writers share the image (share-rw=on); None: unknown
    transient: bool = False         # writes go to a temporary overlay QEMU discards at exit (-drive snapshot=on)
    protocol: str = ""              # driver of the node that holds the data: file, host_device, iscsi, nbd, ...
    protocol_file: str = ""         # that node's filename (the overlay of a transient disk, the host device)
    model: str = ""                 # the guest device's QOM type: virtio-blk-pci, scsi-hd, scsi-block, ...
    passthrough: str = ""           # the guest reaches the device past QEMU's block layer (scsi-block, device='lun')
    target: str = ""                # libvirt: the disk's target (vda, sdb); '' for QMP disks

    @property
    def address(self) -> str:
        """Where the hypervisor finds the disk: the QMP node, else the libvirt target (the manifest's ``node``)."""
        return self.node or self.target

    @property
    def cutpoint_bitmaps(self) -> list[str]:
        return [b["name"] for b in self.bitmaps if is_ours(b["name"])]

    def to_json(self) -> dict[str, Any]:
        """The ``vm add --json`` form, unchanged since before ``target`` existed: ``node`` is the address."""
        out = asdict(self)
        out["node"] = self.address
        del out["target"]
        return out


@dataclass
class Skipped:
    name: str
    reason: str


@dataclass
class Inventory:
    disks: list[Disk]
    skipped: list[Skipped]
    warnings: list[str] = field(default_factory=list)     # recorded on the point (e.g. a cache mode that drops flushes)
