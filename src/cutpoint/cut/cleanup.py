"""Taking a cut back out of QEMU: exports, NBD server, jobs, overlay nodes, overlay files and bitmaps.

Cleanup runs after every backup, successful or not, and again before every backup (``sweep``) so that whatever a
killed cutpoint process left in a VM is removed. Every step is attempted even when an earlier one fails, and a VM
that is gone (killed mid-read) leaves only files to delete. Objects are found by cutpoint's own name prefixes, so
other tools' jobs, nodes, exports and bitmaps are never touched.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from .. import workdir
from ..errors import CutpointError, HypervisorError
from ..hypervisor.disks import BITMAP_PREFIX
from ..hypervisor.qmp import QmpSession
from .transaction import EXPORT_PREFIX, JOB_PREFIX, NODE_PREFIX, Cut

log = logging.getLogger(__name__)

WAIT_SECONDS = 15.0


def release_cut(cut: Cut, success: bool) -> list[str]:
    """Remove everything ``cut`` created. Returns problems that could not be fixed (empty when all is clean)."""
    problems: list[str] = []
    try:
        with QmpSession(cut.qmp) as s:
            problems += _release_in_qemu(s, cut, success)
    except HypervisorError as exc:
        # The VM is gone or unreachable: its in-memory nodes, jobs and exports went with it.
        log.info("cleanup could not reach QEMU (%s); removing files only", exc)
    problems += workdir.remove_workdir(cut.workdir)     # and the VM's folder when no other backup of it runs
    return problems


def _release_in_qemu(s: QmpSession, cut: Cut, success: bool) -> list[str]:
    problems: list[str] = []
    _step(problems, lambda: _del_exports(s, set(cut.exports)))
    if cut.started_nbd:
        _step(problems, lambda: _ignore_missing(lambda: s.cmd("nbd-server-stop")))
    _step(problems, lambda: _cancel_jobs(s, set(cut.jobs)))
    for node in cut.attached:
        _step(problems, partial(_ignore_missing, partial(s.cmd, "blockdev-del", node_name=node)))
    if cut.transaction_done:
        ours: dict[str, set[str]] = {}
        if success:
            _step(problems, lambda: ours.update(_cutpoint_bitmaps(s)))     # one query for all disks
        for fd in cut.disks:
            _step(problems, partial(_settle_bitmaps, s, fd.disk.node, fd.new_bitmap, fd.prev_bitmap, success,
                                    ours.get(fd.disk.node, set())))
    return problems


def _settle_bitmaps(s: QmpSession, node: str, new: str, prev: str | None, success: bool, ours: set[str]) -> None:
    """On success the previous bitmap is done with; on failure the new one is folded back into it.

    After a failed backup the next one must still cover everything since the last *good* point, so the changes the
    new bitmap collected are merged into the previous bitmap, which records again, and the new one goes.
    """
    if success:
        # the previous bitmap, and on a disk read in full (--full, resized, replaced) the one it did not use
        for name in ours - {new}:
            _ignore_missing(partial(s.cmd, "block-dirty-bitmap-remove", node=node, name=name))
        return
    if prev:
        s.cmd("transaction", actions=[
            {"type": "block-dirty-bitmap-enable", "data": {"node": node, "name": prev}},
            {"type": "block-dirty-bitmap-merge", "data": {"node": node, "target": prev, "bitmaps": [new]}},
            {"type": "block-dirty-bitmap-remove", "data": {"node": node, "name": new}},
        ])
    else:
        _ignore_missing(lambda: s.cmd("block-dirty-bitmap-remove", node=node, name=new))


def _cutpoint_bitmaps(s: QmpSession) -> dict[str, set[str]]:
    """Node name -> the cutpoint bitmaps on it (anonymous bitmaps of running block jobs have no name)."""
    return {n["node-name"]: {b["name"] for b in n.get("dirty-bitmaps") or []
                             if b.get("name", "").startswith(BITMAP_PREFIX)}
            for n in s.cmd("query-named-block-nodes", flat=True) if n.get("node-name")}


def sweep(s: QmpSession) -> list[str]:
    """Remove leftovers of earlier cutpoint runs (exports, jobs, overlay nodes). Returns what was removed.

    Only safe while no other cutpoint backup of this VM runs; the caller holds the VM's backup lock.
    """
    removed: list[str] = []
    exports = {e["id"] for e in s.cmd("query-block-exports") if e["id"].startswith(EXPORT_PREFIX)}
    if exports:
        _del_exports(s, exports)
        removed += sorted(exports)
        _ignore_missing(lambda: s.cmd("nbd-server-stop"))
    jobs = {j["device"] for j in s.cmd("query-block-jobs") if j["device"].startswith(JOB_PREFIX)}
    if jobs:
        _cancel_jobs(s, jobs)
        removed += sorted(jobs)
    for node in s.cmd("query-named-block-nodes", flat=True):
        name = node.get("node-name", "")
        if name.startswith(NODE_PREFIX):
            _ignore_missing(partial(s.cmd, "blockdev-del", node_name=name))
            removed.append(name)
    return removed


def _del_exports(s: QmpSession, ids: set[str]) -> None:
    for eid in ids:
        _ignore_missing(partial(s.cmd, "block-export-del", id=eid, mode="hard"))
    _wait_until(lambda: not ids & {e["id"] for e in s.cmd("query-block-exports")}, f"NBD exports {sorted(ids)}")


def _cancel_jobs(s: QmpSession, ids: set[str]) -> None:
    for jid in ids:
        _ignore_missing(partial(s.cmd, "block-job-cancel", device=jid, force=True))

    def gone() -> bool:
        live = {j["device"]: j for j in s.cmd("query-block-jobs")}
        for jid in ids & set(live):
            if live[jid].get("status") == "concluded":  # not auto-dismissed: dismiss it ourselves
                _ignore_missing(partial(s.cmd, "block-job-dismiss", id=jid))
        return not ids & set(live)
    _wait_until(gone, f"block jobs {sorted(ids)}")


def _wait_until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not cond():
        if time.monotonic() > deadline:
            raise HypervisorError(f"{what} still present after {WAIT_SECONDS:.0f} s")
        time.sleep(0.02)


def _ignore_missing(fn: Callable[[], object]) -> None:
    try:
        fn()
    except CutpointError as exc:
        text = str(exc).lower()
        if "not found" in text or "not running" in text or "cannot find" in text or "no such" in text:
            return
        raise


def _step(problems: list[str], fn: Callable[[], object]) -> None:
    try:
        fn()
    except CutpointError as exc:
        problems.append(str(exc))
        log.warning("cleanup step failed: %s", exc)


def workdir_for(base: Path, vm: str, point_id: str) -> Path:
    return workdir.point_path(vm, point_id, base)


def stop_orphan_nbd_server(s: QmpSession, base: Path, vm: str) -> list[str]:
    """Stop the NBD server of a cutpoint killed between ``nbd-server-start`` and its first export (``sweep`` finds
    none to go by). QEMU's 7.2 QMP cannot say where its server listens, but that run's socket lies in its own work
    directory: if it still accepts a connection, the server is cutpoint's. Call before ``sweep_workdirs``."""
    for sock in [d / "nbd.sock" for d in workdir.point_dirs(vm, base)]:
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(2.0)
            try:
                c.connect(str(sock))
            except OSError:
                continue                    # stale: its QEMU, or its server, is gone
        _ignore_missing(lambda: s.cmd("nbd-server-stop"))
        return [f"NBD server on {sock}"]
    return []


def sweep_workdirs(base: Path, vm: str) -> list[str]:
    """Delete work directories of earlier, interrupted backups of ``vm`` (caller holds the VM's lock)."""
    return workdir.sweep(vm, base)
