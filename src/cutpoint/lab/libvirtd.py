"""libvirtd for the lab (tests and benchmarks): answering on the system URI, started here when it is not.

A daemon counts as running when its unix socket accepts a connection. Not ``pgrep``: a daemon of another root (a
chroot) is not ours. Not the socket file's existence either: a killed daemon leaves its socket behind, and then the
daemon must be started again.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

URI = "qemu:///system"
SOCKETS = {"virtlogd": Path("/run/libvirt/virtlogd-sock"), "libvirtd": Path("/run/libvirt/libvirt-sock")}
WAIT_SECONDS = 20.0


def answers(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(2.0)
        try:
            c.connect(str(sock))
        except OSError:
            return False
    return True


def problem(uri: str = URI) -> str | None:
    """None when libvirtd answers on ``uri``, else why not."""
    try:
        import libvirt
    except ImportError:
        return "python3-libvirt is not installed (apt-get install python3-libvirt)"
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)   # errors are raised; do not also print them
    try:
        libvirt.open(uri).close()
        return None
    except libvirt.libvirtError as exc:
        return str(exc)


def ensure(uri: str = URI) -> str | None:
    """Make libvirtd answer on ``uri``, starting virtlogd and libvirtd as root where they do not run. Returns None,
    or why it could not."""
    if problem(uri) is None:
        return None
    if os.geteuid() != 0:
        return f"libvirtd does not answer on {uri} and only root can start it here: {problem(uri)}"
    for daemon in ("virtlogd", "libvirtd"):
        if shutil.which(daemon) is None:
            return f"{daemon} is not installed (apt-get install libvirt-daemon-system)"
        if not answers(SOCKETS[daemon]):
            r = subprocess.run([daemon, "-d"], check=False, capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                return f"cannot start {daemon}: {r.stderr.strip()}"
    deadline = time.monotonic() + WAIT_SECONDS
    while (why := problem(uri)) is not None:
        if time.monotonic() > deadline:
            return f"libvirtd started but does not answer on {uri}: {why}"
        time.sleep(0.2)
    return None
