"""Taking a QMP cut back out of QEMU: exports, NBD server, jobs, overlay nodes, overlay files and bitmaps.

Cleanup runs after every backup, successful or not, and again before every backup (``sweep``) so that whatever a
killed cutpoint process left in a VM is removed. Every step is attempted even when an earlier one fails
(``cut.cleanup.Steps``), and a VM that is gone (killed mid-read) leaves only files to delete. Objects are found by
cutpoint's own name prefixes, so other tools' jobs, nodes, exports and bitmaps are never touched.

QEMU answers a command on a missing object with GenericError, the class of nearly every failure, so whether an
object is still there is asked first (``query-block-exports``, ``query-block-jobs``, ``query-named-block-nodes``);
only objects that exist are removed, and a removal that then fails is a real problem, recorded.
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ... import workdir
from ...cut.cleanup import Steps, remove_workdir
from ...cut.naming import EXPORT_PREFIX, JOB_PREFIX, NODE_PREFIX
from ...cut.plan import Cut
from ...errors import HypervisorError
from .bitmaps import bitmaps_by_node, ours_except, remove_bitmaps
from .qmp import Monitor, QmpSession

log = logging.getLogger(__name__)

WAIT_SECONDS = 15.0


def release_cut(cut: Cut, success: bool) -> list[str]:
    """Remove everything ``cut`` created. Returns problems that could not be fixed (empty when all is clean)."""
    steps = Steps()
    try:
        with QmpSession(cut.qmp) as s:
            _release_in_qemu(s, cut, success, steps)
    except HypervisorError as exc:
        if socket_answers(cut.qmp):
            # QEMU runs but could not be reached (another client holds the monitor, ...): what the cut put into it
            # is still there, which the backup must say rather than report a clean finish.
            vm = cut.workdir.parent.name
            steps.problems.append(f"could not reach QEMU to take the cut out ({exc}); its NBD exports, jobs and "
                                  f"overlay nodes may still be in QEMU: 'cutpoint vm cleanup {vm}' removes them")
        else:
            # The VM is gone: its in-memory nodes, jobs and exports went with it.
            log.info("cleanup could not reach QEMU (%s); removing files only", exc)
    return steps.problems + remove_workdir(cut.workdir)


def _release_in_qemu(s: QmpSession, cut: Cut, success: bool, steps: Steps) -> None:
    steps.run(lambda: _del_exports(s, set(cut.exports)))
    if cut.started_nbd and socket_answers(cut.nbd_socket):     # ours, on our socket, and still running
        steps.run(lambda: s.cmd("nbd-server-stop"))
    steps.run(lambda: _cancel_jobs(s, set(cut.jobs)))
    steps.run(lambda: _del_nodes(s, set(cut.attached)))
    if not cut.transaction_done:
        return
    if success:
        # the previous bitmap, and on a disk read in full (--full, resized, replaced) the one it did not use
        new = cut.disks[0].new_bitmap if cut.disks else ""
        steps.run(lambda: remove_bitmaps(s, ours_except(new), {fd.disk.node for fd in cut.disks}))
        return
    present: dict[str, dict[str, Any]] = {}
    steps.run(lambda: present.update(bitmaps_by_node(s)))          # one query for all disks
    for fd in cut.disks:
        steps.run(functools.partial(_fold_back, s, fd.disk.node, fd.new_bitmap, fd.prev_bitmap,
                                    set(present.get(fd.disk.node, {}))))


def _fold_back(s: Monitor, node: str, new: str, prev: str | None, present: set[str]) -> None:
    """After a failed backup the next one must still cover everything since the last *good* point, so the changes
    the new bitmap collected are merged into the previous bitmap, which records again, and the new one goes."""
    if new not in present:
        return
    if prev:
        s.cmd("transaction", actions=[
            {"type": "block-dirty-bitmap-enable", "data": {"node": node, "name": prev}},
            {"type": "block-dirty-bitmap-merge", "data": {"node": node, "target": prev, "bitmaps": [new]}},
            {"type": "block-dirty-bitmap-remove", "data": {"node": node, "name": new}},
        ])
    else:
        s.cmd("block-dirty-bitmap-remove", node=node, name=new)


def sweep(s: QmpSession) -> list[str]:
    """Remove leftovers of earlier cutpoint runs (exports, jobs, overlay nodes). Returns what was removed.

    Only safe while no other cutpoint backup of this VM runs; the caller holds the VM's backup lock.
    """
    removed: list[str] = []
    exports = {e["id"] for e in s.cmd("query-block-exports") if e["id"].startswith(EXPORT_PREFIX)}
    if exports:
        _del_exports(s, exports)
        removed += sorted(exports)
        s.cmd("nbd-server-stop")        # an export of ours was there, so our NBD server runs
    jobs = {j["device"] for j in s.cmd("query-block-jobs") if j["device"].startswith(JOB_PREFIX)}
    if jobs:
        _cancel_jobs(s, jobs)
        removed += sorted(jobs)
    nodes = {n for n in _node_names(s) if n.startswith(NODE_PREFIX)}
    _del_nodes(s, nodes)
    return removed + sorted(nodes)


def _node_names(s: Monitor) -> set[str]:
    return {n["node-name"] for n in s.cmd("query-named-block-nodes", flat=True) if n.get("node-name")}


def _del_nodes(s: Monitor, names: set[str]) -> None:
    for name in sorted(names & _node_names(s)):
        s.cmd("blockdev-del", node_name=name)


def _del_exports(s: Monitor, ids: set[str]) -> None:
    live = {e["id"]: e for e in s.cmd("query-block-exports")}
    for eid in sorted(ids & set(live)):
        if not live[eid].get("shutting-down"):
            s.cmd("block-export-del", id=eid, mode="hard")
    _wait_until(lambda: not ids & {e["id"] for e in s.cmd("query-block-exports")}, f"NBD exports {sorted(ids)}")


def _cancel_jobs(s: Monitor, ids: set[str]) -> None:
    live = {j["device"]: j for j in s.cmd("query-block-jobs")}
    for jid in sorted(ids & set(live)):
        if live[jid].get("status") != "concluded":
            s.cmd("block-job-cancel", device=jid, force=True)

    def gone() -> bool:
        live = {j["device"]: j for j in s.cmd("query-block-jobs")}
        for jid in ids & set(live):
            if live[jid].get("status") == "concluded":  # not auto-dismissed: dismiss it ourselves
                s.cmd("block-job-dismiss", id=jid)
        return not ids & set(live)
    _wait_until(gone, f"block jobs {sorted(ids)}")


def _wait_until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not cond():
        if time.monotonic() > deadline:
            raise HypervisorError(f"{what} still present after {WAIT_SECONDS:.0f} s")
        time.sleep(0.02)


def stop_orphan_nbd_server(s: QmpSession, base: Path, vm: str) -> list[str]:
    """Stop the NBD server of a cutpoint killed between ``nbd-server-start`` and its first export (``sweep`` finds
    none to go by). QEMU's 7.2 QMP cannot say where its server listens, but that run's socket lies in its own work
    directory: if it still accepts a connection, the server is cutpoint's. Call before ``sweep_workdirs``."""
    for sock in [d / "nbd.sock" for d in workdir.point_dirs(vm, base)]:     # checked, never through a link
        if socket_answers(sock):        # else stale: its QEMU, or its server, is gone
            s.cmd("nbd-server-stop")
            return [f"NBD server on {sock}"]
    return []


def socket_answers(sock: Path) -> bool:
    """Does a process listen on unix socket ``sock``? Asked of the NBD socket because QEMU 7.2 cannot be asked
    whether its NBD server runs (and answers a stop of none with GenericError, like nearly every failure), and of
    the QMP socket to tell a QEMU that is gone from one that could not be reached."""
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(2.0)
        try:
            c.connect(str(sock))
        except OSError:
            return False
    return True
