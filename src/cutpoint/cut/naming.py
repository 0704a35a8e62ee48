"""The names cutpoint gives what it puts into a hypervisor: one prefix per kind of artifact, for both drivers.

Cleanup finds leftovers by these prefixes alone, so other tools' bitmaps, checkpoints, nodes, jobs and exports are
never touched. A bitmap and a libvirt checkpoint of a point share one name: the checkpoint *is* a bitmap per disk.
"""

from __future__ import annotations

BITMAP_PREFIX = "cutpoint-"             # dirty bitmaps, and libvirt checkpoints (a bitmap in every qcow2 disk)
XFER_PREFIX = f"{BITMAP_PREFIX}xfer-"   # libvirt, non-qcow2 disk: the disabled copy of a bitmap that is exported
NODE_PREFIX = "cutpoint-fleece-"        # fleecing overlay nodes (QMP driver)
JOB_PREFIX = "cutpoint-job-"            # copy-before-write block jobs (QMP driver)
EXPORT_PREFIX = "cutpoint-export-"      # NBD exports cutpoint adds itself (both drivers)


def bitmap_name(point_id: str) -> str:
    """The bitmap (and libvirt checkpoint) that records changes since the cut of ``point_id``."""
    return f"{BITMAP_PREFIX}{point_id}"


def is_ours(name: str) -> bool:
    """A bitmap or checkpoint name cutpoint made (a running block job's bitmap has no name)."""
    return name.startswith(BITMAP_PREFIX)
