"""Restore drills: boot a point beside production, collect timed signals, check every filesystem, keep the verdict.

``drill(vault, m, cfg, opts)``, with the vault's points lock held by the caller (``orchestrator.opened_point``):

1. under the host's drill lock (``drillstate``), leftovers of a killed drill are swept first;
2. nbdkit serves the point read-only on a socket in the drill's own directory; each disk gets an empty qcow2
   overlay backed by its export, so the guest's writes land in the overlays and nothing reaches the vault;
3. the point's command line is rewritten as for an instant restore (new name ``drill-<vm>-<point>``: never the
   original's, every socket, pidfile and log in the drill directory, disks on the overlays) and isolated
   (``drillvm.isolate``: no network device); it must fit the CPU and memory budget;
4. signals, each timed from the drill's start: ``qemu`` (its monitor answers), ``console`` (the pattern on the
   serial console), ``agent`` (``guest-ping``, when the point's VM has an agent port), ``command`` (an in-guest
   command through the agent exits 0), then a ``screendump`` kept as PNG. A kernel panic or QEMU exiting ends the
   wait at once. The RTO is the time to the last required signal, when all arrived;
5. QEMU and nbdkit are stopped and the directory removed, whatever happened; then ``fscheck`` checks every
   filesystem of every disk, whether the guest booted or not.

The result (``DrillResult``) is what ``drill --json`` prints and what the catalog keeps with the point.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import pids, qemuimg
from ..drivers.qmp.agent import SocketAgent, find_channel
from ..drivers.qmp.qmp import QmpSession
from ..errors import CutpointError, HypervisorError, UsageError
from ..vault.manifest import Manifest
from ..vault.vault import Vault
from ..vmconfig import QmpVmConfig
from . import drillstate, drillvm, fscheck, launch, private, vmsetup
from .drillvm import DEFAULT_CONSOLE, DEFAULT_TIMEOUT
from .images import _safe
from .nbdserve import PointServer, nbdkit_argv, stop_server
from .names import terminal_safe

PANIC = re.compile(r"Kernel panic - not syncing:[^\n]*")
CONSOLE_TAIL = 4096
CONSOLE_READ = 1 << 20                   # the console is guest output: only its last MiB is ever read


@dataclass
class Signal:
    name: str
    at_s: float | None
    ok: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DrillOptions:
    console: str = DEFAULT_CONSOLE
    timeout: float = DEFAULT_TIMEOUT
    command: list[str] = field(default_factory=list)     # in-guest command through the agent (exit 0 required)
    max_memory_mb: int = 0                               # 0: half of the host's available memory
    max_cpus: int = 0                                    # 0: the host's CPUs
    evidence: Path | None = None                         # where the screendump PNG is kept
    key_file: Path | None = None
    lock_wait: float = 0.0                               # seconds to wait for the host's drill lock


@dataclass
class DrillResult:
    vm: str
    point: str
    verdict: str                                         # 'passed' | 'failed'
    reasons: list[str]
    rto_s: float | None
    signals: list[Signal]
    filesystems: list[fscheck.FsVerdict]
    started: str
    duration_s: float
    drill_vm: str
    console_pattern: str
    console_tail: str
    screendump: dict[str, Any] | None
    isolation: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def options_for(settings: dict[str, Any], *, console: str | None = None, timeout: float | None = None,
                evidence: Path | None = None, key_file: Path | None = None) -> DrillOptions:
    """A VM's drill options: its ``settings['drill']`` (``vm set --drill-*``), ``console``/``timeout`` overriding."""
    own = settings.get("drill")
    own = own if isinstance(own, dict) else {}
    cmd = own.get("command")
    t = own.get("timeout")
    return DrillOptions(console=console or str(own.get("console") or DEFAULT_CONSOLE),
                        timeout=timeout or (float(t) if isinstance(t, (int, float)) and t > 0 else DEFAULT_TIMEOUT),
                        command=[str(x) for x in cmd] if isinstance(cmd, list) else [],
                        evidence=evidence, key_file=key_file)


def drill_name(vm: str, point: str) -> str:
    """``drill-<vm>-<point prefix>``: never a registered VM's name (``check_new_name`` refuses a clash)."""
    return f"drill-{vm}"[:48] + "-" + point.replace(":", "")[:15]


def drill(vault: Vault, m: Manifest, cfg: QmpVmConfig, opts: DrillOptions) -> DrillResult:
    try:
        pattern = re.compile(opts.console)
    except re.error as exc:
        raise UsageError(f"console pattern {opts.console!r} is not a regular expression: {exc}") from exc
    if opts.timeout <= 0:
        raise UsageError(f"--timeout must be positive, not {opts.timeout:g}")
    with drillstate.host_lock(opts.lock_wait):
        drillstate.sweep()
        return _run(vault, m, cfg, opts, pattern)


def _run(vault: Vault, m: Manifest, cfg: QmpVmConfig, opts: DrillOptions, pattern: re.Pattern[str]
         ) -> DrillResult:
    t0 = time.monotonic()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    name = drill_name(m.vm, m.point)
    vmsetup.check_new_name(vault, name)
    d = drillstate.base() / secrets.token_hex(4)
    private.make_private_dir(d)
    signals: list[Signal] = []
    reasons: list[str] = []
    tail = ""
    shot: dict[str, Any] | None = None
    dropped: list[str] = []
    rw = None
    qemu_pid = server_pid = 0
    try:
        paths = {x.name: d / f"{_safe(x.name)}.qcow2" for x in m.disks}
        rw = vmsetup.command_line(m, cfg, name, d, vmsetup.targets(m, cfg, paths, "qcow2"))
        dropped = drillvm.isolate(rw, d)
        _check_budget(rw.argv, opts)
        sock = d / "nbd.sock"
        server_pid = PointServer(sock, d / "nbd.pid", d / "nbd.log").start(
            nbdkit_argv(vault.root, m.vm, m.point, key_file=opts.key_file))
        for i, x in enumerate(m.disks):
            os.close(private.create(paths[x.name]))
            qemuimg.create(paths[x.name], "qcow2", x.size, backing=f"nbd+unix:///d{i}?socket={sock}",
                           backing_fmt="raw", what=f"cannot create drill overlay {paths[x.name]}",
                           env=private.child_env(), umask=private.UMASK)
        deadline = t0 + opts.timeout
        try:
            qemu_pid = launch.start(rw, d / "qemu.log", timeout=max(5.0, deadline - time.monotonic()))
            signals.append(Signal("qemu", _at(t0), True))
        except CutpointError as exc:
            signals.append(Signal("qemu", None, False, terminal_safe(str(exc))))
            reasons.append(f"QEMU did not start: {terminal_safe(str(exc))}")
        if qemu_pid:
            reasons += _wait_signals(rw.qmp, qemu_pid, d / "console.log", pattern, opts, t0, deadline, signals)
            shot = _screendump(rw.qmp, d, opts.evidence, m)
        tail = _console_tail(d / "console.log")
    finally:
        if rw is not None and qemu_pid:
            launch.stop(rw.qmp, qemu_pid)
        if server_pid:
            stop_server(server_pid)
        shutil.rmtree(d, ignore_errors=True)
    if shot is None and qemu_pid:
        reasons.append("no screendump could be taken")
    fsdir = drillstate.base() / ("fs-" + secrets.token_hex(4))     # swept like the VM's if this is killed
    private.make_private_dir(fsdir)
    try:
        fs = fscheck.check_point(vault, m, opts.key_file, base=fsdir / "views")
    finally:
        shutil.rmtree(fsdir, ignore_errors=True)
    for f in fs:
        if f.verdict == "failed":
            reasons.append(f"filesystem check failed on {f.where()} ({f.fstype or 'unknown'}): {f.detail}")
    passed = not reasons
    required = [s.at_s for s in signals if s.ok and s.at_s is not None]
    return DrillResult(m.vm, m.point, "passed" if passed else "failed", reasons,
                       round(max(required), 3) if passed and required else None, signals, fs, started,
                       round(time.monotonic() - t0, 3), name, opts.console, tail, shot, dropped)


def _check_budget(argv: list[str], opts: DrillOptions) -> None:
    mem = drillvm.memory_mb(argv)
    limit = opts.max_memory_mb or _available_mb() // 2
    if mem > limit:
        raise UsageError(f"the drill VM needs {mem} MiB of memory, over the drill budget of {limit} MiB; drill on a "
                         "host with more free memory, or give the VM less (its -m) before the next backup")
    n = drillvm.cpus(argv)
    cap = opts.max_cpus or (os.cpu_count() or 1)
    if n > cap:
        raise UsageError(f"the drill VM wants {n} CPUs, over the drill budget of {cap}")


def _available_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1024


def _at(t0: float) -> float:
    return round(time.monotonic() - t0, 3)


def _wait_signals(qmp: Path, pid: int, console: Path, pattern: re.Pattern[str], opts: DrillOptions, t0: float,
                  deadline: float, signals: list[Signal]) -> list[str]:
    """Wait for the console pattern, then the agent and the command; returns the reasons for a failure."""
    seen = None
    while seen is None:
        text = _read_console(console)
        if pattern.search(text):
            seen = _at(t0)
            break
        panic = PANIC.search(text)
        if panic:
            signals.append(Signal("console", None, False, terminal_safe(panic.group(0))))
            return [f"the guest did not boot: {terminal_safe(panic.group(0))}"]
        if not pids.alive(pid):
            signals.append(Signal("console", None, False, "QEMU exited"))
            return [f"QEMU exited before the console showed {opts.console!r}"]
        if time.monotonic() > deadline:
            signals.append(Signal("console", None, False, "timeout"))
            return [f"the console did not show {opts.console!r} within {opts.timeout:g} s"]
        time.sleep(0.1)
    signals.append(Signal("console", seen, True))
    try:
        with QmpSession(qmp) as s:
            channel = find_channel(s)
    except HypervisorError:
        channel = None
    if channel is None or channel.socket is None:
        if opts.command:
            signals.append(Signal("command", None, False, "the VM has no guest agent"))
            return ["an in-guest command is configured but the VM has no guest agent port"]
        return []
    agent = SocketAgent(channel.socket)
    try:
        while True:
            try:
                agent.ping(timeout=2.0)
                signals.append(Signal("agent", _at(t0), True))
                break
            except HypervisorError as exc:
                agent.close()
                if time.monotonic() > deadline:
                    signals.append(Signal("agent", None, False, terminal_safe(str(exc))))
                    return [f"the guest agent did not answer guest-ping within {opts.timeout:g} s"]
                time.sleep(0.5)
        if opts.command:
            try:
                res = agent.exec(opts.command[0], opts.command[1:], timeout=max(1.0, deadline - time.monotonic()))
            except HypervisorError as exc:
                signals.append(Signal("command", None, False, terminal_safe(str(exc))))
                return [f"the in-guest command could not run: {terminal_safe(str(exc))}"]
            ok = res.exitcode == 0
            signals.append(Signal("command", _at(t0) if ok else None, ok, f"exit {res.exitcode}"))
            if not ok:
                return [f"the in-guest command {' '.join(opts.command)!r} exited {res.exitcode}"]
    finally:
        agent.close()
    return []


def _read_console(p: Path) -> str:
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - CONSOLE_READ))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _console_tail(p: Path) -> str:
    return terminal_safe(_read_console(p)[-CONSOLE_TAIL:])


def _screendump(qmp: Path, d: Path, evidence: Path | None, m: Manifest) -> dict[str, Any] | None:
    ppm = d / "screen.ppm"
    try:
        with QmpSession(qmp) as s:
            s.cmd("screendump", filename=str(ppm))
        if evidence is None:
            return None
        private.make_private_dir(evidence)
        png = evidence / f"{_safe(m.vm)}-{_safe(m.point)}.png"
        png.unlink(missing_ok=True)
        w, h = drillvm.ppm_to_png(ppm, png)
    except (HypervisorError, CutpointError, OSError):
        return None
    data = png.read_bytes()
    return {"png": str(png), "width": w, "height": h, "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}
