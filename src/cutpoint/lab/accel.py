"""Choose KVM when it really works, else TCG.

``/dev/kvm`` existing and even accepting KVM_CREATE_VM is not enough: on some nested hosts a KVM guest runs real-mode
code and then hangs in the kernel's long-mode start, silently. So the probe boots the lab kernel under KVM and waits
for its first console line. The answer is cached per host boot (``/proc/sys/kernel/random/boot_id``);
``$CUTPOINT_ACCEL=kvm|tcg`` overrides it.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import UsageError
from ..paths import cache_home

KVM_GET_API_VERSION = 0xAE00
PROBE_SECONDS = 5.0


def _kvm_device_ok() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, KVM_GET_API_VERSION) == 12
    except OSError:
        return False
    finally:
        os.close(fd)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def probe_kvm(kernel: Path, timeout: float = PROBE_SECONDS, accel: str = "kvm") -> bool:
    """Boot ``kernel`` under KVM until it prints its banner; False on any error, exit or silence.

    ``accel`` exists so tests can check the probe itself against TCG, which always works.
    """
    with tempfile.TemporaryDirectory(prefix="cutpoint-kvm-probe-") as tmp:
        log = Path(tmp) / "console.log"
        cmd = [
            "qemu-system-x86_64", "-accel", accel, "-machine", "q35", "-m", "128", "-display", "none",
            "-nodefaults", "-no-user-config", "-no-reboot", "-serial", f"file:{log}", "-kernel", str(kernel),
            "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1",
        ]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if log.exists() and b"Linux version" in log.read_bytes():
                    return True
                if proc.poll() is not None:
                    return False
                time.sleep(0.05)
            return False
        finally:
            proc.kill()
            proc.wait()


def choose(kernel: Path) -> str:
    """'kvm' or 'tcg' for lab guests booting ``kernel``."""
    forced = os.environ.get("CUTPOINT_ACCEL", "").strip().lower()
    if forced:
        if forced not in ("kvm", "tcg"):
            raise UsageError(f"CUTPOINT_ACCEL={forced!r}: use kvm or tcg")
        return forced
    if not _kvm_device_ok():
        return "tcg"
    cache = cache_home() / "accel.json"
    try:
        known = json.loads(cache.read_text())
        if known.get("boot_id") == _boot_id() and known.get("accel") in ("kvm", "tcg"):
            return known["accel"]
    except (OSError, ValueError):
        pass
    accel = "kvm" if probe_kvm(kernel) else "tcg"
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"boot_id": _boot_id(), "accel": accel}))
    os.replace(tmp, cache)
    return accel
