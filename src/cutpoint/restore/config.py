"""Reading back the VM configuration a backup captured (``drivers/qmp/config.py`` captures it).

Whether the captured QEMU still runs (``--replace``, instant restore), and a command line from QMP facts alone when
the point has no readable command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def process_alive(pid: int | None, start_time: int | None = None) -> bool:
    """Is ``pid`` a live (not zombie) process, and the same one as captured when ``start_time`` is known?"""
    if not pid:
        return False
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    if fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == start_time


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
