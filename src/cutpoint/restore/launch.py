"""Start and stop restored VMs, and tell whether a VM is still running.

A restored VM must outlive the ``cutpoint`` command that started it. A command line with ``-daemonize`` is run as is
(QEMU returns once it is up, or with its error); any other runs in its own session with its output in ``qemu.log``
beside the disks, and counts as started once its QMP monitor answers.

"Is it running?" has three independent witnesses, because each alone can be fooled: the registered QMP socket
answers (or is held by another client); the captured pid is alive and is the same process (start time); and QEMU's
image locks are held on one of its disk files (``qemu-img info`` without ``-U`` is refused).

Only a command line checked by ``argcheck`` (through ``cmdline.rewrite``) is run, and only if its binary is the
trusted emulator; QEMU gets an environment without the vault passphrase and a 0077 umask (its sockets, logs and
pidfile are private), and runs in the new VM's directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from .. import pids, qemuimg
from ..drivers.qmp.qmp import QmpSession
from ..errors import CutpointError, HypervisorError, MonitorBusyError, UsageError
from . import allowlist, private
from .cmdline import Rewritten


def start(rw: Rewritten, log: Path, timeout: float = 60.0) -> int:
    """Start the VM described by ``rw``; returns QEMU's pid once its monitor answers."""
    if not rw.argv or not allowlist.is_trusted_binary(rw.argv[0]):
        raise UsageError(f"refusing to run {rw.argv[0] if rw.argv else '(nothing)'}: a restored VM runs only "
                         f"{allowlist.qemu_dir()}/qemu-system-*")
    cwd = rw.cwd if os.path.isdir(rw.cwd) else str(log.parent)
    rw.qmp.unlink(missing_ok=True)
    rw.pidfile.unlink(missing_ok=True)
    env = private.child_env()
    with os.fdopen(private.open_log(log), "w") as out:
        try:
            if rw.daemonize:
                r = subprocess.run(rw.argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   timeout=timeout, env=env, umask=private.UMASK)
                if r.returncode != 0:
                    raise CutpointError(f"QEMU did not start: {_tail(log)}")
                proc = None
            else:
                proc = subprocess.Popen(rw.argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                        umask=private.UMASK)
        except OSError as exc:
            raise CutpointError(f"cannot run {rw.argv[0]}: {exc.strerror or exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise CutpointError(f"QEMU did not daemonize within {timeout:.0f} s") from exc
    deadline = time.monotonic() + timeout
    while True:
        pid = proc.pid if proc is not None else read_pid(rw.pidfile)
        if proc is not None and proc.poll() is not None:
            raise CutpointError(f"QEMU exited with status {proc.returncode}: {_tail(log)}")
        if pid and rw.qmp.exists():
            try:
                with QmpSession(rw.qmp, connect_timeout=5) as s:
                    s.cmd("query-status")
                return pid
            except HypervisorError:
                pass
        if time.monotonic() > deadline:
            if proc is not None:
                proc.kill()
            raise CutpointError(f"QEMU's monitor {rw.qmp} did not answer within {timeout:.0f} s: {_tail(log)}")
        time.sleep(0.05)


def stop(qmp: Path, pid: int | None, timeout: float = 15.0) -> None:
    """quit over QMP (QEMU flushes and closes its images), else SIGTERM, else SIGKILL."""
    try:
        with QmpSession(qmp, connect_timeout=2) as s:
            s.cmd("quit")
    except HypervisorError:
        pass
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None and pid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + timeout
        while pids.alive(pid):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        else:
            return


def running_reason(qmp: str | None, pid: int | None, start_time: int | None, files: list[Path]) -> str | None:
    """Why the VM looks alive, or None when no witness says so."""
    if qmp and Path(qmp).exists():
        try:
            with QmpSession(qmp, connect_timeout=2):
                return f"its QMP socket {qmp} answers"
        except MonitorBusyError:
            return f"its QMP socket {qmp} is held by another client"
        except HypervisorError:
            pass
    if pids.alive(pid, start_time):
        return f"its QEMU process (pid {pid}) still runs"
    for f in files:
        if not f.exists():
            continue
        if qemuimg.locked(f, env=private.child_env()):
            return f"a QEMU process holds the lock on its disk {f}"
    return None


def read_pid(p: Path) -> int:
    try:
        return int(p.read_text().strip())
    except (OSError, ValueError):
        return 0


def _tail(log: Path, n: int = 5) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()[-n:]
    except OSError:
        return "(no output)"
    return " / ".join(lines) or "(no output)"
