"""Supported-scenario checks, run on the VM's inventory before any cut (and shown by ``cutpoint vm add``).

Some disk set-ups cannot be made consistent by a cut of this VM, whatever cutpoint does, and a point that silently
leaves them inconsistent is worse than no point. Those disks are refused, with what was detected and what to do,
unless the user excludes them (``cutpoint vm set NAME --exclude-disk DISK``; the exclusion is recorded on every
point):

* **shared** (``share-rw=on`` on the device): another VM or process may write the same image; its writes are not
  ordered with this VM's, so no cut of this VM holds a state of that disk that any writer saw;
* **read-only** (``read-only=on``/``readonly=on``): the guest cannot change it, so there is nothing to protect
  continuously, and QEMU will not put change tracking on it;
* **transient** (``-drive snapshot=on``): the guest's writes go to QEMU's temporary overlay, deleted when QEMU
  exits; the VM's image never changes, so a point would hold state the VM itself will lose;
* **raw pass-through** (a ``scsi-block``/``scsi-generic`` guest device; libvirt's ``device='lun'``): the guest's
  SCSI commands reach the device by SG_IO, past the block layer where the cut and the dirty bitmap are taken, and
  the device may keep acknowledged writes in its own volatile cache; back it up on its storage. A host block device
  (an LVM volume) under an emulated disk is not refused: its writes all go through QEMU's block layer.

CD-ROMs are skipped by discovery. Host caching is recorded per disk on the point, and warned about only where it
matters (see ../shared notes on host caching, measured with the lab verifier): the cut is a QMP ``transaction``
inside QEMU's block layer and the point is read back through it, so every write QEMU acknowledged before the cut is
in the point whatever ``cache.direct``/``cache.writeback`` say; ``writeback`` therefore gets no warning. Only
``cache.no-flush=on`` (``cache=unsafe``) gets a note: the restored image is consistent, but the VM's own image on
the host may lose acknowledged writes in a host crash, because QEMU never flushes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import UnsupportedError
from ..cut.disks import Disk, Inventory, Skipped


@dataclass
class Verdict:
    """One disk's support verdict: ``backed up``, ``excluded`` or ``refused``, with why and any warnings."""

    disk: str
    state: str
    reason: str = ""
    cache: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"disk": self.disk, "state": self.state, "reason": self.reason or None, "cache": self.cache,
                "warnings": self.warnings}


@dataclass
class Checked:
    inventory: Inventory          # only the disks to back up; excluded ones moved to ``skipped``
    verdicts: list[Verdict]

    @property
    def refused(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.state == "refused"]


def cache_mode(c: dict[str, bool]) -> str:
    """QEMU's cache flags as the -drive cache= mode they correspond to (``?`` when the driver does not say)."""
    if not c:
        return "?"
    if c.get("no-flush"):
        return "unsafe"
    if c.get("direct"):
        return "none" if c.get("writeback") else "directsync"
    return "writeback" if c.get("writeback") else "writethrough"


def refusal(d: Disk, vm: str) -> str | None:
    """Why ``d`` cannot be part of a consistent point of ``vm``, or None."""
    fix = f"exclude it with 'cutpoint vm set {vm} --exclude-disk {d.name}'"
    if d.share_rw:
        return (f"disk {d.name} is attached with share-rw=on ({d.qdev or 'its device'}): other VMs or processes may "
                f"write the same image, and their writes are not ordered with this VM's cut; {fix} (back it up "
                "where it is written) or attach it without share-rw")
    if d.transient:
        return (f"disk {d.name} is transient (-drive snapshot=on): the guest writes to QEMU's temporary overlay "
                f"{d.protocol_file}, deleted when QEMU exits, and its image never changes; {fix} or attach it "
                "without snapshot=on")
    if d.passthrough:
        where = " ".join(x for x in (d.protocol, d.protocol_file or d.filename) if x)
        return (f"disk {d.name} is a raw pass-through: a {d.passthrough} over {where}; the guest's SCSI commands "
                "reach the device past QEMU's block layer, where the cut and the dirty bitmap are taken, and the "
                f"device may keep acknowledged writes in its own volatile cache; back it up on its storage and {fix}")
    if d.read_only:
        return (f"disk {d.name} is read-only (read-only=on): the guest cannot change it, so there is nothing to "
                f"protect continuously; {fix} and copy its image once")
    return None


def cache_warning(d: Disk) -> str | None:
    if d.cache.get("no-flush"):
        return (f"disk {d.name} has cache.no-flush=on (cache=unsafe): the point holds every write QEMU acknowledged, "
                "so a VM restored from it is consistent, but QEMU ignores the guest's flushes, so the VM's own image "
                f"{d.filename} may lose acknowledged writes if this host crashes")
    return None


def check(inv: Inventory, settings: dict[str, Any], vm: str) -> Checked:
    """Apply the VM's exclusions and the checks above; never raises (``enforce`` does)."""
    excluded = set(settings.get("exclude_disks") or [])
    keep: list[Disk] = []
    skipped = list(inv.skipped)
    warnings = list(inv.warnings)
    verdicts: list[Verdict] = []
    for d in inv.disks:
        mode = cache_mode(d.cache)
        if d.name in excluded:
            note = f"excluded ('cutpoint vm set {vm} --exclude-disk {d.name}')"
            skipped.append(Skipped(d.name, note))
            verdicts.append(Verdict(d.name, "excluded", note, mode))
            continue
        why = refusal(d, vm)
        if why:
            verdicts.append(Verdict(d.name, "refused", why, mode))
            continue
        w = cache_warning(d)
        verdicts.append(Verdict(d.name, "backed up", "", mode, [w] if w else []))
        if w and w not in warnings:
            warnings.append(w)
        keep.append(d)
    for k in inv.skipped:
        verdicts.append(Verdict(k.name, "skipped", k.reason))
    for name in sorted(excluded - {d.name for d in inv.disks}):
        warnings.append(f"excluded disk {name} is not a disk of this VM (any more)")
    return Checked(Inventory(keep, skipped, warnings), verdicts)


def enforce(checked: Checked, vm: str) -> Inventory:
    """The inventory to back up, or UnsupportedError naming every refused disk."""
    if checked.refused:
        raise UnsupportedError(f"VM {vm!r} cannot be backed up consistently as configured: "
                               + "; ".join(v.reason for v in checked.refused))
    return checked.inventory
