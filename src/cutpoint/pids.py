"""Whether a process still exists: how a job record or a lock tells a dead holder from a live one."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True while ``pid`` exists (also when it is another user's). 0 and negative pids name process groups, never
    a holder, so they are not alive."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
