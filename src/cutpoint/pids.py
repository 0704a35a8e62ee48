"""Whether a process still exists: how a job record, a lock or a restore tells a dead holder from a live one."""

from __future__ import annotations

from pathlib import Path


def alive(pid: int | None, start_time: int | None = None) -> bool:
    """Is ``pid`` a live (not zombie) process, and the same one as captured when ``start_time`` is known?
    Read from ``/proc``, so another user's process counts too; 0 and negative pids are never a holder."""
    if not pid or pid < 0:
        return False
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    if fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == start_time
