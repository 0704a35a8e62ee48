"""Reading back the VM configuration a backup captured (``drivers/qmp/config.py`` captures it).

A command line from QMP facts alone, when the point has no readable command line. (Whether the captured QEMU still
runs is ``pids.alive``.)
"""

from __future__ import annotations

from typing import Any


def synthesize_argv(facts: dict[str, Any]) -> list[str]:
    """A command line from QMP facts alone: boots the disks on the same machine type with the same memory and CPUs.

    Disk options are left to the rewrite (``cmdline.rewrite``), which attaches every restored disk it finds no
    option for; here only the disk device models are remembered in the facts.
    """
    arch = facts.get("arch") or "x86_64"
    argv = [f"qemu-system-{arch}", "-nodefaults", "-display", "none"]
    if facts.get("machine"):
        argv += ["-machine", str(facts["machine"])]
    argv += ["-accel", "kvm" if facts.get("kvm") else "tcg"]
    if facts.get("memory"):
        argv += ["-m", f"{int(facts['memory']) >> 20}M"]
    if facts.get("cpus"):
        argv += ["-smp", str(facts["cpus"])]
    if facts.get("status") in ("prelaunch", "paused"):
        argv.append("-S")
    return argv
