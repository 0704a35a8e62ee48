"""The cut: one QMP ``transaction`` that freezes a point in time across all disks of a running VM.

For every disk an empty qcow2 *fleecing overlay* is attached with the live disk as its backing node. One transaction
then, per disk, adds a fresh dirty bitmap (it records what changes after this cut, for the next incremental),
disables the previous point's bitmap (so it holds exactly the changes between the two cuts), and starts
``blockdev-backup sync=none`` into the overlay: from that instant QEMU copies old data into the overlay before the
guest overwrites it, so reading the overlay gives the disk as it was at the cut. QEMU drains all disks for the
transaction, which makes the cut atomic across disks; the guest pauses only for that round trip (``pause_ms``).

The overlays are then exported read-only over QEMU's NBD server for the reader, while the guest runs on.
"""

from __future__ import annotations

from typing import Any

from ...cut.plan import Cut
from ...cut.quiesce import Quiesce, atomic
from ...errors import HypervisorError, QmpCommandError
from .overlay import create_qcow2
from .qmp import QmpSession


def take_cut(session: QmpSession, cut: Cut, quiesce: Quiesce | None = None) -> None:
    """Attach overlays, run the transaction, export the frozen state. Records progress on ``cut`` for cleanup.

    ``quiesce`` (the guest-agent freeze) brackets the transaction alone, so the guest's filesystems stay frozen
    only for that round trip, not for the overlay and export set-up."""
    _create_overlays(cut)
    for fd in cut.disks:
        session.cmd("blockdev-add", driver="qcow2", node_name=fd.node,
                    file={"driver": "file", "filename": str(fd.overlay)}, backing=fd.disk.node)
        cut.attached.append(fd.node)

    actions: list[dict[str, object]] = []
    for fd in cut.disks:
        actions.append({"type": "block-dirty-bitmap-add", "data": {
            "node": fd.disk.node, "name": fd.new_bitmap, "persistent": fd.disk.driver == "qcow2"}})
        if fd.prev_bitmap:
            actions.append({"type": "block-dirty-bitmap-disable", "data": {
                "node": fd.disk.node, "name": fd.prev_bitmap}})
        actions.append({"type": "blockdev-backup", "data": {
            "device": fd.disk.node, "target": fd.node, "sync": "none", "job-id": fd.job}})
    cut.pause_ms = atomic(lambda: session.cmd("transaction", actions=actions), quiesce)
    cut.transaction_done = True
    cut.jobs = [fd.job for fd in cut.disks]
    _start_nbd(session, cut)
    cut.started_nbd = True
    for fd in cut.disks:
        args: dict[str, Any] = {"type": "nbd", "id": fd.export, "node_name": fd.node, "name": fd.export,
                                   "writable": False}
        if fd.prev_bitmap:
            args["bitmaps"] = [fd.prev_bitmap]
        session.cmd("block-export-add", **args)
        cut.exports.append(fd.export)


def _start_nbd(session: QmpSession, cut: Cut) -> None:
    """Start QEMU's one NBD server on the cut's socket. QEMU cannot say whether a server already runs (7.2 has no
    query for it) and answers every failure with GenericError, so an export of another tool is looked for first,
    and a refusal names both causes it can have rather than guess from QEMU's wording."""
    foreign = [e["id"] for e in session.cmd("query-block-exports") if e.get("type") == "nbd"]
    if foreign:      # ours were swept before the cut
        raise HypervisorError(
            f"this QEMU already runs an NBD server started by another tool (exports {', '.join(foreign)}), and QEMU "
            "allows only one; stop that tool's export (nbd-server-stop) and retry")
    try:
        session.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": str(cut.nbd_socket)}})
    except QmpCommandError as exc:
        raise HypervisorError(
            f"QEMU cannot start an NBD server on {cut.nbd_socket} ({exc.desc}); QEMU allows one NBD server, so if "
            "another tool started one, stop it (nbd-server-stop) and retry") from exc


def _create_overlays(cut: Cut) -> None:
    """Every disk's overlay file, written here (``overlay.py``: a qemu-img process per disk cost 10-15 ms with the
    monitor held). They lie in the cut's work directory, which cleanup removes in any case."""
    for fd in cut.disks:
        try:
            create_qcow2(fd.overlay, fd.disk.size)
        except OSError as exc:
            raise HypervisorError(f"cannot create fleecing overlay {fd.overlay}: {exc.strerror or exc}; the work "
                                  "directory ($CUTPOINT_WORK) must be writable, with room") from exc
        except ValueError as exc:           # a disk past 128 PiB: one refcount block no longer covers the file
            raise HypervisorError(f"cannot create fleecing overlay {fd.overlay} for disk {fd.disk.name}: {exc}") \
                from exc
