"""Lab VMs: real QEMU guests running the ordered-write workload, for tests, the demo and benchmarks.

Each VM lives in ``lab_home()/NAME/`` (disk images, ``qmp.sock``, ``qemu.pid``, ``console.log``, ``vm.json``).
QEMU runs daemonized, detached from the caller, so a VM outlives the CLI command that started it and ``down`` works
from any process. Bringing up a stopped VM again reuses its disks: the workload resumes after the largest sequence
number on them, so restored disks can be booted and checked to continue the same write order.

With ``agent=True`` the guest is the application-consistency lab: its disks are created with an ext4 filesystem
(made on the host), mounted in the guest, written through by the file workload, and qemu-ga answers on the
virtio-serial port whose host end is ``qga.sock`` in the VM's directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .. import qemuimg
from ..errors import CutpointError, HypervisorError, NotFoundError, UsageError
from ..paths import lab_home
from . import accel as accel_mod
from . import image
from .qemu_args import DiskSpec, kernel_cmdline, qemu_argv
from ..drivers.qmp.qmp import QmpSession

__all__ = ["DiskSpec", "LabVM", "up", "down", "get", "list_vms", "remove"]

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
STARTED = "CUTPOINT-WORKLOAD-STARTED"
BOOTED = "CUTPOINT-BOOT-DONE"
FAILURES = ("CUTPOINT-WORKLOAD-ERROR", "Kernel panic")
PROGRESS_RE = re.compile(r"CUTPOINT-WORKLOAD(?:-STARTED)? seq=(\d+)")
SUN_PATH_MAX = 107


@dataclass
class LabVM:
    name: str
    dir: Path
    qmp: Path
    pid: int
    accel: str
    disks: list[dict]  # {"name", "path", "size", "format", "attach", "node", "device", "drive"}
    seed: int = 0
    slots: int = 256
    workload: bool = True
    cdrom: bool = False
    memory_mb: int = 256
    agent: bool = False
    boot_seconds: float | None = None
    started_at: float = 0.0
    argv: list[str] = field(default_factory=list)

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @property
    def agent_socket(self) -> Path | None:
        """The host end of the guest agent's virtio-serial port (None without ``agent``)."""
        return self.dir / "qga.sock" if self.agent else None

    @property
    def running(self) -> bool:
        return _alive(self.pid, self.qmp)

    def to_json(self) -> dict:
        return {
            "name": self.name, "dir": str(self.dir), "qmp": str(self.qmp), "pid": self.pid, "accel": self.accel,
            "running": self.running, "disks": self.disks, "seed": self.seed, "slots": self.slots,
            "workload": self.workload, "cdrom": self.cdrom, "memory_mb": self.memory_mb, "agent": self.agent,
            "agent_socket": str(self.agent_socket) if self.agent_socket else None,
            "boot_seconds": self.boot_seconds, "started_at": self.started_at, "console": str(self.console),
            "argv": self.argv,
        }

    @classmethod
    def from_json(cls, d: dict) -> "LabVM":
        keep = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        keep["dir"], keep["qmp"] = Path(d["dir"]), Path(d["qmp"])
        return cls(**keep)

    def console_text(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def last_seq(self) -> int | None:
        """The newest sequence number the workload reported on the console (progress lines come every second)."""
        found = PROGRESS_RE.findall(self.console_text())
        return int(found[-1]) if found else None

    def wait_for(self, pattern: str, timeout: float = 30.0, fail: Sequence[str] = FAILURES) -> re.Match[str]:
        """Wait until the console matches ``pattern``; raise with the console tail on timeout, QEMU exit or when a
        ``fail`` text (workload error, kernel panic) shows up first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.console_text()
            m = rx.search(text)
            if m:
                return m
            for bad in fail:
                if bad in text:
                    raise CutpointError(f"lab VM {self.name} failed ({bad}) while waiting for {pattern!r}\n"
                                        f"{_tail(self)}")
            if not self.running:
                raise CutpointError(f"lab VM {self.name} exited while waiting for {pattern!r}\n{_tail(self)}")
            if time.monotonic() > deadline:
                raise CutpointError(f"lab VM {self.name}: no {pattern!r} on the console after {timeout:.0f}s\n"
                                    f"{_tail(self)}")
            time.sleep(0.1)


def _tail(vm: LabVM, lines: int = 15) -> str:
    text = vm.console_text().rstrip().splitlines()[-lines:]
    qlog = vm.dir / "qemu.log"
    extra = qlog.read_text(errors="replace").strip() if qlog.exists() else ""
    return "console tail:\n  " + "\n  ".join(text or ["(empty)"]) + (f"\nqemu: {extra}" if extra else "")


def _alive(pid: int, qmp: Path) -> bool:
    """Is ``pid`` still this VM's QEMU (not a zombie, not a recycled pid)?"""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return str(qmp).replace(",", ",,").encode() in cmdline  # as written in -qmp unix:PATH


def _check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name or ""):
        raise UsageError(f"lab VM name {name!r}: use letters, digits, '.', '_' and '-' (at most 63)")


def _vm_dir(name: str) -> Path:
    _check_name(name)
    return lab_home() / name


def _save(vm: LabVM) -> None:
    tmp = vm.dir / "vm.json.tmp"
    tmp.write_text(json.dumps(vm.to_json(), indent=1) + "\n")
    os.replace(tmp, vm.dir / "vm.json")


def get(name: str) -> LabVM:
    d = _vm_dir(name)
    try:
        return LabVM.from_json(json.loads((d / "vm.json").read_text()))
    except FileNotFoundError:
        raise NotFoundError(f"no lab VM named {name!r} in {lab_home()}; 'cutpoint lab list' shows them") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CutpointError(f"lab VM {name}: {d / 'vm.json'} is unreadable: {e}") from e


def list_vms() -> list[LabVM]:
    home = lab_home()
    if not home.is_dir():
        return []
    out = []
    for d in sorted(home.iterdir()):
        if (d / "vm.json").is_file() and NAME_RE.fullmatch(d.name):
            try:
                out.append(get(d.name))
            except CutpointError:
                continue
    return out


def _wait_gone(pid: int, qmp: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid, qmp):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _stop(pid: int, qmp: Path) -> None:
    """quit over QMP (QEMU flushes and closes its images), else SIGTERM (same, from a signal), else SIGKILL."""
    if not _alive(pid, qmp):
        return
    try:
        with QmpSession(qmp, connect_timeout=2.0, command_timeout=2.0) as q:
            q.cmd("quit")
    except (HypervisorError, OSError):
        pass  # monitor busy (another client holds it) or already closing
    if _wait_gone(pid, qmp, 15):
        return
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pid, qmp, grace):
            return
    raise CutpointError(f"QEMU pid {pid} did not exit even after SIGKILL")


def down(name: str, *, remove: bool = False) -> None:
    """Stop the VM (idempotent); with ``remove`` also delete its directory, disks included."""
    vm = get(name)
    _stop(vm.pid, vm.qmp)
    if remove:
        shutil.rmtree(vm.dir)
    elif (vm.dir / "vm.json").exists():
        _save(vm)


def remove(name: str) -> None:
    down(name, remove=True)


def _create_disk(path: Path, spec: DiskSpec, *, mkfs: bool = False) -> None:
    """A new image; with ``mkfs`` it holds an ext4 filesystem, made on a raw file (converted for qcow2) so that
    the guest needs no mkfs of its own. Inode tables and journal are written now, not lazily in the guest."""
    raw = path.with_name(path.name + ".mkfs.raw") if mkfs and spec.fmt != "raw" else path
    try:
        qemuimg.create(raw, "raw" if mkfs else spec.fmt, spec.size, what=f"qemu-img create {path} failed")
        if mkfs:
            cmd = ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(raw)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise CutpointError(f"mkfs.ext4 {path} failed: {r.stderr.strip()}")
            if raw != path:
                qemuimg.convert(raw, path, "raw", spec.fmt, what=f"qemu-img convert {path} failed")
    finally:
        if raw != path:
            raw.unlink(missing_ok=True)


def _node_names(vm: LabVM) -> None:
    """Fill in node names and device paths from query-block (-drive attachments get generated node names)."""
    with QmpSession(vm.qmp, connect_timeout=10.0) as q:
        blocks = q.cmd("query-block")
    by_file = {}
    for b in blocks:
        ins = b.get("inserted")
        if ins and b.get("qdev") != "cdrom0-dev":
            by_file[ins.get("file")] = b
    for disk in vm.disks:
        b = by_file.get(disk["path"])
        if b is None:
            continue
        disk["node"] = b["inserted"].get("node-name")
        disk["device"] = b.get("qdev")
        disk["drive"] = b.get("device") or None


def _prepare(d: Path, name: str) -> dict[str, Any]:
    """Refuse a running VM of that name; return the previous vm.json (or {})."""
    prev: dict[str, Any] = {}
    if (d / "vm.json").exists():
        vm = get(name)
        if vm.running:
            raise UsageError(f"lab VM {name} is already running (pid {vm.pid}); 'cutpoint lab down {name}' first")
        prev = vm.to_json()
    qmp = d / "qmp.sock"
    if len(str(qmp)) > SUN_PATH_MAX:
        raise UsageError(f"{qmp} is longer than a unix socket path may be; set CUTPOINT_LAB to a shorter directory")
    for stale in ("qmp.sock", "qga.sock", "qemu.pid", "qemu.log"):
        (d / stale).unlink(missing_ok=True)
    if (d / "console.log").exists():
        os.replace(d / "console.log", d / "console.log.prev")
    return prev


def up(
    name: str, disks: list[DiskSpec], *, seed: int | None = None, slots: int = 256, workload: bool = True,
    cdrom: bool = False, memory_mb: int = 256, extra_args: Sequence[str] = (), wait: bool = True,
    timeout: float = 60, rate: int = 0, agent: bool = False,
) -> LabVM:
    """Create (or restart) lab VM ``name`` and, with ``wait``, return once its workload has made its first write
    (and, with ``agent``, once qemu-ga has opened its port).

    Existing disk images of a stopped VM of the same name are reused, not recreated.
    """
    d = _vm_dir(name)
    if workload and not disks:
        raise UsageError("the workload needs at least one disk")
    if slots <= 0 or memory_mb < 64:
        raise UsageError("slots must be positive and memory at least 64 MiB")
    for i, spec in enumerate(disks):
        spec.validate(i)
        if workload and spec.size // slots < 4096:
            raise UsageError(f"disk{i}: {spec.size} bytes is too small for {slots} slots of 4096 bytes")
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"lab VM {name} is being started or stopped by another process") from None
        prev = _prepare(d, name)
        guest = image.build()
        if agent and guest.agent_initrd is None:
            raise NotFoundError(f"lab VM {name}: --agent needs {image.QEMU_GA} on the host "
                                "(apt-get install qemu-guest-agent)")
        accel = accel_mod.choose(guest.kernel)
        if seed is None:
            seed = int(prev.get("seed") or random.randrange(1, 1 << 63))
        paths = []
        for i, spec in enumerate(disks):
            path = d / f"disk{i}.{spec.fmt}"
            if not path.exists():
                _create_disk(path, spec, mkfs=agent)
            paths.append(path)
        argv = qemu_argv(
            name=name, dir=d, accel=accel, memory_mb=memory_mb, kernel=guest.kernel,
            initrd=guest.agent_initrd if agent and guest.agent_initrd else guest.initrd,
            append=kernel_cmdline(seed=seed, slots=slots, ndisks=len(disks), workload=workload, rate=rate,
                                  agent=agent),
            disks=list(zip(disks, paths)), cdrom=cdrom, extra_args=list(extra_args),
            agent_socket=d / "qga.sock" if agent else None,
        )
        vm = LabVM(
            name=name, dir=d, qmp=d / "qmp.sock", pid=0, accel=accel, seed=seed, slots=slots, workload=workload,
            cdrom=cdrom, memory_mb=memory_mb, argv=argv, agent=agent,
            disks=[{"name": f"disk{i}", "path": str(p), "size": s.size, "format": s.fmt, "attach": s.attach,
                    "node": f"disk{i}" if s.attach == "blockdev" else None, "device": None, "drive": None}
                   for i, (s, p) in enumerate(zip(disks, paths))],
        )
        return _launch(vm, wait=wait, timeout=timeout)


def _launch(vm: LabVM, *, wait: bool, timeout: float) -> LabVM:
    t0 = time.monotonic()
    vm.started_at = time.time()
    _save(vm)  # known (as stopped) even if QEMU fails to start, so down/remove can clean up
    try:
        with open(vm.dir / "qemu.log", "w") as log:
            r = subprocess.run(vm.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=60)
        vm.pid = _read_pid(vm.dir / "qemu.pid")
        if r.returncode != 0:
            raise CutpointError(f"QEMU failed to start lab VM {vm.name}: {(vm.dir / 'qemu.log').read_text().strip()}")
        _save(vm)
        _node_names(vm)
        _save(vm)
        if wait:
            vm.wait_for(STARTED if vm.workload else BOOTED, timeout=max(0.0, timeout - (time.monotonic() - t0)))
            if vm.agent:
                _wait_agent_port(vm, deadline=t0 + timeout)
            vm.boot_seconds = round(time.monotonic() - t0, 2)
            _save(vm)
        return vm
    except BaseException as e:
        if not vm.pid:
            vm.pid = _read_pid(vm.dir / "qemu.pid")
        _stop(vm.pid, vm.qmp)
        if vm.pid:
            _save(vm)
        if isinstance(e, subprocess.TimeoutExpired):
            raise CutpointError(f"QEMU for lab VM {vm.name} did not daemonize within 60 s") from e
        raise


def _wait_agent_port(vm: LabVM, deadline: float) -> None:
    """Wait until qemu-ga has opened its port in the guest (QEMU reports the chardev's frontend as open)."""
    vm.wait_for("CUTPOINT-AGENT-STARTED", timeout=max(0.0, deadline - time.monotonic()))
    while True:
        with QmpSession(vm.qmp, connect_timeout=10.0) as q:
            devs = {c["label"]: c for c in q.cmd("query-chardev")}
        if devs.get("qga0", {}).get("frontend-open"):
            return
        if time.monotonic() > deadline:
            raise CutpointError(f"lab VM {vm.name}: qemu-ga did not open its virtio-serial port\n{_tail(vm)}")
        time.sleep(0.1)


def _read_pid(p: Path) -> int:
    try:
        return int(p.read_text().strip())
    except (OSError, ValueError):
        return 0
