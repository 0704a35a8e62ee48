"""Talking to libvirtd: connections, domains, the backup job, checkpoints, and QMP pass-through for what libvirt lacks.

Bindings are Debian's ``python3-libvirt`` (seen through the venv's system site packages, as libnbd is): they are
built against the host's libvirt, so the API a backup uses always matches the daemon it talks to.

libvirt keeps bitmaps only in qcow2 images, so for other formats (raw files, block devices) cutpoint manages an
in-memory QEMU bitmap itself through ``virDomainQemuMonitorCommand``. libvirt marks such a domain as "tainted:
custom-monitor" in its log; cutpoint uses the monitor only for its own ``cutpoint-*`` bitmaps and exports, and only
on domains with such disks or to remove a bitmap libvirt could not.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import libvirt
import libvirt_qemu

from ...errors import HypervisorError, NotFoundError
from ..qmp.bitmaps import remove_bitmaps
from ..qmp.qmp import qmp_arguments, reply_value

log = logging.getLogger(__name__)

JOB_WAIT = 30.0


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; cutpoint reports them itself, once."""


libvirt.registerErrorHandler(_quiet, None)


def msg(exc: libvirt.libvirtError) -> str:
    return str(exc.get_error_message() or exc).strip()


def connect(uri: str) -> libvirt.virConnect:
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise HypervisorError(f"cannot connect to libvirt at {uri}: {msg(exc)}; is libvirtd running "
                              "(systemctl start libvirtd, or libvirtd -d)?") from exc


def lookup(conn: libvirt.virConnect, name: str, uri: str) -> libvirt.virDomain:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise NotFoundError(f"libvirt domain {name!r} does not exist at {uri}; 'virsh -c {uri} list --all' "
                                "lists the domains") from exc
        raise HypervisorError(f"cannot look up libvirt domain {name!r} at {uri}: {msg(exc)}") from exc


def call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run one libvirt call; its error becomes a ``HypervisorError`` saying what cutpoint was doing."""
    try:
        return fn(*args)
    except libvirt.libvirtError as exc:
        raise HypervisorError(f"libvirt: {what} failed: {msg(exc)}") from exc


class DomainMonitor:
    """QMP through libvirt (the domain's monitor belongs to libvirtd): the same ``Monitor`` as a ``QmpSession``, so
    QEMU's errors are the same ``QmpCommandError`` with QEMU's ``error_class``."""

    def __init__(self, dom: libvirt.virDomain) -> None:
        self.dom = dom

    def cmd(self, name: str, /, _timeout: float | None = None, **args: Any) -> Any:
        args = qmp_arguments(args)
        req = json.dumps({"execute": name, "arguments": args} if args else {"execute": name})
        try:
            raw = libvirt_qemu.qemuMonitorCommand(self.dom, req, 0)
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"libvirt: QMP {name} on domain {self.dom.name()!r} failed: {msg(exc)}") from exc
        try:
            reply = json.loads(raw)
        except ValueError as exc:
            raise HypervisorError(f"libvirt relayed a QMP reply to {name} that is not JSON") from exc
        return reply_value(name, reply)


def backup_job(dom: libvirt.virDomain) -> str | None:
    """The XML of the domain's running backup job, or None when there is none."""
    try:
        return str(dom.backupGetXMLDesc(0))
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN_BACKUP, libvirt.VIR_ERR_OPERATION_INVALID):
            return None      # no job, or the domain is not running (then there is no job either)
        raise HypervisorError(f"libvirt: cannot query the backup job of {dom.name()!r}: {msg(exc)}") from exc


def end_backup_job(dom: libvirt.virDomain) -> None:
    """End a pull-mode backup job and wait until libvirt has taken it down (exports, NBD server, scratch nodes).

    ``virDomainAbortJob`` is how a pull backup ends, successful or not; it returns while libvirt is still cancelling
    the block jobs and deleting the scratch files, so cutpoint waits for the job to be gone before touching them.
    """
    if backup_job(dom) is None:
        return
    try:
        dom.abortJob()
    except libvirt.libvirtError as exc:
        if backup_job(dom) is not None:
            raise HypervisorError(f"libvirt: cannot end the backup job of {dom.name()!r}: {msg(exc)}") from exc
    deadline = time.monotonic() + JOB_WAIT
    while backup_job(dom) is not None:
        if time.monotonic() > deadline:
            raise HypervisorError(f"the backup job of domain {dom.name()!r} was still there {JOB_WAIT:.0f} s "
                                  "after it was aborted")
        time.sleep(0.02)


def checkpoints(dom: libvirt.virDomain, prefix: str) -> list[libvirt.virDomainCheckpoint]:
    return [c for c in call(f"listing checkpoints of {dom.name()!r}", dom.listAllCheckpoints, 0)
            if c.getName().startswith(prefix)]


def delete_checkpoint(dom: libvirt.virDomain, cp: libvirt.virDomainCheckpoint) -> None:
    """Delete a checkpoint and its bitmaps; when libvirt cannot (bitmap already gone, domain not running), drop the
    metadata and remove what is left of the bitmaps over QMP, so no checkpoint of ours outlives its point."""
    name = cp.getName()
    try:
        cp.delete(0)
        return
    except libvirt.libvirtError as exc:
        log.info("checkpoint %s of %s: %s; removing its metadata and bitmaps separately", name, dom.name(), msg(exc))
    call(f"deleting the metadata of checkpoint {name}", cp.delete,
         libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
    if dom.isActive():
        remove_bitmaps(DomainMonitor(dom), lambda b: b == name)


def block_nodes(dom: libvirt.virDomain) -> list[dict[str, Any]]:
    """QMP ``query-block`` of the domain: per device its qdev path, top node name and dirty bitmaps."""
    return [b for b in DomainMonitor(dom).cmd("query-block") if b.get("inserted")]
