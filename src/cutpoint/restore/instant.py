"""Instant restore: a VM running from a restore point in seconds, whatever its disks' size.

``restore NAME POINT --instant NEWNAME``:

1. nbdkit serves the point's disks read-only (exports d0, d1, ...) on a unix socket, detached; it reads chunks from
   the vault only when asked and holds the vault's shared points lock, so prune cannot pull chunks from under it.
2. Per disk, an empty local qcow2 overlay whose backing file is that export (``nbd+unix:///dN?socket=...``, raw).
3. The captured command line is rewritten onto the overlays (``cmdline.py``) and QEMU started: the guest runs at
   once, reading what it has not written from the vault.
4. ``block-stream`` per overlay (job ``cutpoint-instant-N``) copies the rest into the overlays in the background;
   when a job completes QEMU drops the overlay's backing. Jobs are auto-dismissed: QEMU 7.2 crashes on
   ``query-named-block-nodes`` while a concluded stream job waits to be dismissed. A job that failed is thus seen
   as an overlay still backed by NBD with no job running; ``finish`` starts streaming it again.

``instant status`` shows the streaming progress; ``instant finish`` waits for it, checks that no block node uses
the NBD driver any more, stops the server and records the VM as an ordinary protected VM. The VM is registered when
it starts, with the instant state in its catalog settings: a backup refuses such a VM until ``finish``.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import pids, qemuimg
from ..drivers.qmp.qmp import QmpSession
from ..errors import CutpointError, HypervisorError, UsageError
from ..workdir import private_dir
from ..vault.manifest import Manifest
from ..vault.vault import Vault
from ..vmconfig import QmpVmConfig
from . import launch, private, vmsetup
from .cmdline import SUN_PATH_MAX
from .images import Progress, _safe
from .driver import Registration
from .nbdserve import PointServer, nbdkit_argv, stop_server
from ..vault import location
from .results import InstantResult, NewDisk
from .targets import Instant

JOB_PREFIX = "cutpoint-instant-"


def _socket_path(vmdir: Path, name: str) -> Path:
    sock = vmdir / "nbd.sock"
    if len(str(sock)) <= SUN_PATH_MAX:
        return sock
    d = private_dir("instant") / name
    private.make_private_dir(d)
    return d / "nbd.sock"


def _create_overlay(path: Path, backing: str, size: int) -> None:
    private.refuse_planted(path)
    os.close(private.create(path))             # ours and 0600 before qemu-img writes the overlay into it
    qemuimg.create(path, "qcow2", size, backing=backing, backing_fmt="raw", what=f"cannot create overlay {path}",
                   env=private.child_env(), umask=private.UMASK)


def instant_restore(vault: Vault, m: Manifest, cfg: QmpVmConfig, t: Instant) -> InstantResult:
    """Steps 1-4 of the module docstring; the caller (the orchestrator) holds the vault's points lock meanwhile."""
    t0 = time.monotonic()
    new_name = t.name
    vmsetup.check_new_name(vault, new_name)
    vmdir = vmsetup.dir_for(t.to, new_name)
    created = vmsetup.make_dir(vmdir)
    sock = _socket_path(vmdir, new_name)
    server_pid = qemu_pid = 0
    registered = False
    rw = None
    try:
        paths = {d.name: vmdir / f"{_safe(d.name)}.qcow2" for d in m.disks}
        # the saved configuration is checked before any process starts (argcheck, through the rewrite)
        rw = vmsetup.command_line(m, cfg, new_name, vmdir, vmsetup.targets(m, cfg, paths, "qcow2"))
        server = PointServer(sock, vmdir / "nbd.pid", vmdir / "nbd.log")
        server_pid = server.start(nbdkit_argv(vault.root, m.vm, m.point, key_file=t.key_file))
        for i, d in enumerate(m.disks):
            _create_overlay(paths[d.name], f"nbd+unix:///d{i}?socket={sock}", d.size)
        state = {"server_pid": server_pid, "socket": str(sock), "started": _now(),
                 "overlays": {k: str(v) for k, v in paths.items()}}
        disks = [NewDisk(d.name, paths[d.name], d.size, "qcow2") for d in m.disks]
        extra = {"name": new_name, "restored_from": {"vm": m.vm, "point": m.point}, "instant": state,
                 "disks": [d.to_json() for d in disks]}
        spec, script = vmsetup.write_spec(vmdir, rw, extra)
        qemu_pid = launch.start(rw, vmdir / "qemu.log")
        running_s = time.monotonic() - t0
        jobs = _start_streams(rw.qmp, list(paths.values()))
        vmsetup.register(vault, new_name, Registration("qmp", str(rw.qmp), {
            "restored_from": {"vm": m.vm, "point": m.point}, "dir": str(vmdir), "pid": qemu_pid, "instant": state}))
        registered = True
    except BaseException:
        if qemu_pid and rw is not None:
            launch.stop(rw.qmp, qemu_pid)
        if server_pid:
            stop_server(server_pid)
        if registered:
            vmsetup.unregister(vault, new_name)
        vmsetup.remove_dir(vmdir, created)
        if sock.parent != vmdir:
            vmsetup.remove_dir(sock.parent)
        raise
    source, fetch = location.describe(vault.root), _fetch_bytes(vault, m)
    warnings = list(rw.warnings)
    if getattr(vault, "remote", None) is not None:
        warnings.append(f"the VM reads its disks from {source} until 'cutpoint instant finish': streaming them "
                        f"downloads {fetch} stored bytes, and every read the guest makes first is a request there")
    return InstantResult(vm=m.vm, point=m.point, new_vm=new_name, dir=vmdir, qmp=rw.qmp, pid=qemu_pid,
                         server_pid=server_pid, socket=sock, jobs=jobs, disks=disks, script=script, config=spec,
                         warnings=warnings, time_to_running_s=round(running_s, 3),
                         duration_s=round(time.monotonic() - t0, 3), source=source, fetch_bytes=fetch)


def _fetch_bytes(vault: Vault, m: Manifest) -> int:
    """What streaming the point reads from the vault: the stored size of each distinct chunk (from the index: no
    data is read), the cost of an instant restore from object storage."""
    seen: set[str] = set()
    total = 0
    for d in m.disks:
        for cid in d.chunks:
            if cid is not None and cid not in seen:
                seen.add(cid)
                total += vault.chunks.stored_size(cid)
    return total


def _start_streams(qmp: Path, overlays: list[Path], only_backed: bool = False) -> list[str]:
    """Start block-stream on every overlay node that still has a backing; returns the job ids."""
    wanted = {str(p) for p in overlays}
    jobs = []
    with QmpSession(qmp) as s:
        running = {j["device"] for j in s.cmd("query-block-jobs")}
        for i, b in enumerate(s.cmd("query-block")):
            ins = b.get("inserted") or {}
            if ins.get("file") not in wanted and ins.get("image", {}).get("filename") not in wanted:
                continue
            if only_backed and "backing-image" not in ins.get("image", {}):
                continue
            job = f"{JOB_PREFIX}{ins['node-name'].lstrip('#')}"
            if job in running:
                continue
            s.cmd("block-stream", job_id=job, device=ins["node-name"])
            jobs.append(job)
    return jobs


def _state(vault: Vault, name: str) -> tuple[Any, dict[str, Any]]:
    vm = vault.catalog.vm(name)
    st = vm.settings.get("instant")
    if not st:
        raise UsageError(f"VM {name!r} is not being instant-restored (never was, or 'instant finish' already ran)")
    return vm, st


def status(vault: Vault, name: str) -> dict[str, Any]:
    vm, st = _state(vault, name)
    out: dict[str, Any] = {"vm": name, "server_pid": st["server_pid"],
                           "server_running": pids.alive(st["server_pid"]), "socket": st["socket"]}
    try:
        with QmpSession(vm.address, connect_timeout=3) as s:
            jobs = [j for j in s.cmd("query-block-jobs") if j["device"].startswith(JOB_PREFIX)]
            nbd_nodes = [n["node-name"] for n in s.cmd("query-named-block-nodes", flat=True) if n["drv"] == "nbd"]
    except HypervisorError as exc:
        out.update(state="vm-not-running", detail=str(exc))
        return out
    out["jobs"] = [{"id": j["device"], "status": j.get("status"), "done": j["offset"], "total": j["len"]}
                   for j in jobs]
    out["bytes_done"] = sum(j["offset"] for j in jobs)
    out["bytes_total"] = sum(j["len"] for j in jobs)
    out["nbd_nodes"] = nbd_nodes
    out["state"] = "streamed" if not nbd_nodes else "streaming" if jobs else "stalled"   # stalled: finish retries
    return out


def finish(vault: Vault, name: str, *, progress: Progress | None = None, timeout: float = 3600.0
           ) -> dict[str, Any]:
    """Wait until every overlay holds all its data, then cut the VM loose from the vault."""
    t0 = time.monotonic()
    vm, st = _state(vault, name)
    overlays = [Path(p) for p in st.get("overlays", {}).values()]
    try:
        _start_streams(Path(vm.address), overlays, only_backed=True)     # restart any that failed or were lost
    except HypervisorError as exc:
        raise CutpointError(f"VM {name!r} is not running ({exc}); start it with its start.sh (the NBD server "
                            "keeps serving), then run 'cutpoint instant finish' again") from exc
    deadline = time.monotonic() + timeout
    retries = 0
    while True:
        with QmpSession(vm.address) as s:
            jobs = [j for j in s.cmd("query-block-jobs") if j["device"].startswith(JOB_PREFIX)]
            if progress and jobs:
                progress(name, sum(j["offset"] for j in jobs), max(sum(j["len"] for j in jobs), 1))
            nbd_nodes = [] if jobs else [n["node-name"] for n in s.cmd("query-named-block-nodes", flat=True)
                                         if n["drv"] == "nbd"]
        if not jobs and not nbd_nodes:
            break
        if not jobs:                      # a stream ended without dropping its backing: it failed
            retries += 1
            if retries > 3:
                raise CutpointError(f"streaming the disks of {name!r} keeps failing (see its qemu.log and nbd.log); "
                                    "the VM still reads from the vault")
            _start_streams(Path(vm.address), overlays, only_backed=True)
        if time.monotonic() > deadline:
            raise CutpointError(f"streaming did not finish within {timeout:.0f} s; 'cutpoint instant status {name}'")
        time.sleep(0.2)
    stop_server(int(st["server_pid"]))
    Path(st["socket"]).unlink(missing_ok=True)
    settings = dict(vm.settings)
    settings.pop("instant")
    settings["instant_finished"] = _now()
    vault.catalog.update_vm(name, settings=settings)
    return {"vm": name, "state": "finished", "server_stopped": not pids.alive(int(st["server_pid"])),
            "nbd_nodes": [], "duration_s": round(time.monotonic() - t0, 3)}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
