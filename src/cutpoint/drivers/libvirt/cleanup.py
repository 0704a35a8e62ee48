"""Taking a libvirt cut back out: the backup job, checkpoints, cutpoint's own bitmaps, the work directory.

Checkpoints follow the chain rules of the QMP driver: after a successful backup of point P the domain holds exactly
one cutpoint checkpoint, ``cutpoint-P``; older ones are deleted (bitmaps included). A failed backup deletes its new
checkpoint, so the previous one, whose bitmaps still record, covers the whole gap. Every step is tried
(``cut.cleanup.Steps``); what fails is returned as a problem, which the backup records as a warning.
"""

from __future__ import annotations

import functools

import libvirt

from ...cut.cleanup import Steps, remove_workdir
from ...cut.naming import BITMAP_PREFIX
from ...errors import HypervisorError
from ..qmp.bitmaps import ours_except, remove_bitmaps
from . import conn as lc
from .cut import LibvirtCut


def release_cut(cut: LibvirtCut, success: bool) -> list[str]:
    """End the job, settle checkpoints and bitmaps, delete the work directory. Returns problems.

    Success: every cutpoint checkpoint but the new one goes. Failure: the new one goes, so the previous checkpoint,
    still recording, covers the gap. A domain that died mid-read keeps only checkpoint metadata to drop.
    """
    steps = Steps()
    try:
        conn = lc.connect(cut.uri)
    except HypervisorError as exc:
        steps.problems.append(str(exc))
        conn = None
    if conn is not None:
        try:
            steps.run(lambda: _release_in_domain(lc.lookup(conn, cut.domain, cut.uri), cut, success, steps))
        finally:
            conn.close()
    return steps.problems + remove_workdir(cut.workdir)


def _release_in_domain(dom: libvirt.virDomain, cut: LibvirtCut, success: bool, steps: Steps) -> None:
    active = bool(lc.call(f"asking whether domain {cut.domain!r} runs", dom.isActive))
    if active and cut.started:
        steps.run(lambda: lc.end_backup_job(dom))
    steps.run(lambda: settle_checkpoints(dom, cut.checkpoint, success))
    if active:
        mon = lc.DomainMonitor(dom)
        for node, prev in cut.plain.values():
            keep = cut.checkpoint if success else prev
            steps.run(functools.partial(remove_bitmaps, mon, ours_except(keep), {node}))


def settle_checkpoints(dom: libvirt.virDomain, new: str, success: bool) -> None:
    for cp in lc.checkpoints(dom, BITMAP_PREFIX):
        is_new = cp.getName() == new
        if (success and not is_new) or (not success and is_new):
            lc.delete_checkpoint(dom, cp)
