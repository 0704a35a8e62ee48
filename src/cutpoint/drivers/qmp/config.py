"""What it takes to start a QMP VM again, captured during every backup and stored on the point's manifest.

A point without its VM's configuration can only give back disk images; with it, cutpoint can start a new VM from the
point (``--new-vm``, ``--instant``) and tell whether the original still runs (``--replace``). Two sources, best
first:

* ``cmdline``: the QEMU process is local. Its pid comes from the QMP connection's peer credentials (``SO_PEERCRED``,
  recorded by the kernel when QEMU listened), else from the process that holds the listening socket's inode
  (``/proc/net/unix`` + ``/proc/*/fd``). ``/proc/PID/cmdline`` is then the exact command line, ``/proc/PID/cwd``
  the directory relative paths in it are relative to.
* ``qmp``: QEMU runs elsewhere (another pid namespace, another host behind a forwarded socket). What QMP tells
  (target, machine type, accelerator, memory, CPUs, disks and their device models) is enough to synthesize a command
  line that boots the disks; NICs and other devices are not reconstructed, which the config says in ``warnings``.

Capture never fails a backup: any problem becomes a warning and a config with what could be learned. Restore reads
the config back (``restore/config.py``, ``restore/cmdline.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...errors import CutpointError
from .disks import discover
from .qmp import QmpSession

CONFIG_VERSION = 1


def capture(session: QmpSession, *, use_proc: bool = True) -> dict[str, Any]:
    """The VM's configuration as a JSON-able dict (see the module docstring for its two sources)."""
    warnings: list[str] = []
    try:
        facts = qmp_facts(session, warnings)
    except CutpointError as exc:   # never fail the backup for it
        facts = {"error": str(exc)}
        warnings.append(f"cannot read the VM's configuration over QMP: {exc}")
    cfg: dict[str, Any] = {"type": "qmp", "version": CONFIG_VERSION, "source": "qmp", "qmp_address": str(session.path),
                           "qmp": facts, "warnings": warnings}
    pid = None
    if use_proc:
        pid = session.peer_pid() or pid_by_socket(session.path)
    if pid is not None:
        try:
            argv = [a.decode(errors="surrogateescape")
                    for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError as exc:
            cfg["warnings"].append(f"cannot read QEMU's command line (pid {pid}): {exc.strerror or exc}")
        else:
            if argv:
                cfg.update(source="cmdline", pid=pid, argv=argv, cwd=cwd, start_time=_start_time(pid))
    if cfg["source"] == "qmp":
        cfg["warnings"].append("QEMU's command line is not readable from here; a VM started from this point is "
                               "rebuilt from what QMP tells (machine, memory, CPUs, disks), without NICs or other "
                               "devices")
    return cfg


def qmp_facts(s: QmpSession, warnings: list[str]) -> dict[str, Any]:
    """Machine, accelerator, memory, CPUs and disks as QMP reports them; each fact is optional, and one QMP does not
    give is named in ``warnings``."""
    facts: dict[str, Any] = {}

    def ask(key: str, cmd: str, pick: Any, **args: Any) -> None:
        try:
            facts[key] = pick(s.cmd(cmd, **args))
        except CutpointError as exc:
            warnings.append(f"VM configuration: no {key} ({exc})")
        except (KeyError, TypeError, ValueError) as exc:
            warnings.append(f"VM configuration: no {key} (QEMU's answer to {cmd} lacks it: {exc!r})")
    ask("name", "query-name", lambda r: r.get("name"))
    ask("arch", "query-target", lambda r: r["arch"])
    ask("machine", "qom-get", lambda r: str(r).removesuffix("-machine"), path="/machine", property="type")
    ask("kvm", "query-kvm", lambda r: bool(r.get("enabled")))
    ask("memory", "query-memory-size-summary", lambda r: int(r["base-memory"]))
    ask("cpus", "query-cpus-fast", len)
    ask("status", "query-status", lambda r: r["status"])
    disks = []
    for d in discover(s).disks:
        entry = {"name": d.name, "node": d.node, "driver": d.driver, "filename": d.filename, "size": d.size,
                 "device": d.device, "qdev": d.qdev, "read_only": d.read_only, "model": d.model}
        disks.append(entry)
    facts["disks"] = disks
    return facts


def pid_by_socket(path: Path) -> int | None:
    """The pid of the local process that listens on unix socket ``path``, or None (not local, not visible)."""
    inodes = set()
    try:
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                parts = line.split()
                if len(parts) >= 8 and parts[7] == str(path) and parts[5] == "01":  # 01: listening
                    inodes.add(parts[6])
    except OSError:
        return None
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(proc.name)
        except OSError:
            continue
    return None


def _start_time(pid: int) -> int | None:
    """Process start time in clock ticks since boot: tells a recycled pid from the captured QEMU."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
