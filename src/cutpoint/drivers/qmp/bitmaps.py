"""Keeping cutpoint's dirty bitmaps in step with the catalog, before every cut.

The invariant: after a successful backup of point P, each disk holds exactly one cutpoint bitmap, ``cutpoint-P``,
recording every write since P's cut. A cutpoint process killed mid-backup can leave P's bitmap disabled and a newer
one recording; their union still covers everything since P, so they are merged back into P's. Anything else (bitmap
missing, marked inconsistent by QEMU, disabled with nothing to merge) means the chain is broken for that disk, and
the caller reads it in full with the returned reason. Bitmaps of other tools are never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from ...cut.disks import Disk
from ...cut.naming import is_ours
from .qmp import Monitor


def bitmaps_by_node(s: Monitor) -> dict[str, dict[str, dict[str, Any]]]:
    """Node name -> its named dirty bitmaps, by name, for every named node (one query for the whole VM)."""
    return {n["node-name"]: {b["name"]: b for b in n.get("dirty-bitmaps") or [] if b.get("name")}
            for n in s.cmd("query-named-block-nodes", flat=True) if n.get("node-name")}


def ours_except(keep: str | None) -> Callable[[str], bool]:
    """Matches cutpoint's bitmaps other than ``keep``."""
    return lambda name: is_ours(name) and name != keep


def remove_bitmaps(s: Monitor, match: Callable[[str], bool], nodes: Collection[str] | None = None) -> list[str]:
    """Remove every bitmap ``match`` accepts, on ``nodes`` (every node when None); returns ``node/bitmap`` removed.
    The one removal by name for both drivers (libvirt's reaches QEMU through its monitor pass-through)."""
    removed = []
    for node, bitmaps in bitmaps_by_node(s).items():
        if nodes is not None and node not in nodes:
            continue
        for name in sorted(filter(match, bitmaps)):
            s.cmd("block-dirty-bitmap-remove", node=node, name=name)
            removed.append(f"{node}/{name}")
    return removed


def reconcile(s: Monitor, disk: Disk, keep: str | None) -> str | None:
    """Make ``keep`` the only cutpoint bitmap on ``disk``; returns why it cannot be used, or None if it can."""
    ours = {b["name"]: b for b in disk.bitmaps if b["name"] in disk.cutpoint_bitmaps}
    kept = ours.pop(keep, None) if keep else None
    others = sorted(ours)
    reason: str | None = None
    if keep is None:
        reason = "no previous point"
    elif kept is None and others:
        reason = (f"dirty bitmap {keep} is missing on node {disk.node}; the disk tracks changes since "
                  f"{', '.join(others)}, a point that no longer exists (deleted)")
    elif kept is None:
        reason = (f"dirty bitmap {keep} is missing on node {disk.node} (VM restarted without persistent bitmaps, "
                  "e.g. a raw disk, or the bitmap was removed)")
    elif kept.get("inconsistent"):
        reason = f"dirty bitmap {keep} is marked inconsistent by QEMU (VM not shut down cleanly)"
        others.append(keep)
    elif not kept.get("recording", True):
        if others:
            s.cmd("transaction", actions=[
                {"type": "block-dirty-bitmap-enable", "data": {"node": disk.node, "name": keep}},
                {"type": "block-dirty-bitmap-merge", "data": {"node": disk.node, "target": keep, "bitmaps": others}},
            ])
        else:
            reason = f"dirty bitmap {keep} was left disabled by an interrupted backup"
            others.append(keep)
    for name in others:
        s.cmd("block-dirty-bitmap-remove", node=disk.node, name=name)
    return reason
