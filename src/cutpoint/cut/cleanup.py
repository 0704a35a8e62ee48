"""What every driver's cleanup shares: each step attempted, failures collected; the work directories removed.

Cleanup runs after every backup, successful or not, and again before every backup (a driver's ``sweep``), so that
whatever a killed cutpoint process left behind is removed. A failed step must neither stop the steps after it nor
vanish: it becomes a problem the backup records as a warning on its result.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from ..errors import CutpointError

log = logging.getLogger(__name__)


class Steps:
    """Runs cleanup steps one after the other; a step's ``CutpointError`` is kept in ``problems``, not raised."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def run(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except CutpointError as exc:
            self.problems.append(str(exc))
            log.warning("cleanup step failed: %s", exc)


def workdir_for(base: Path, vm: str, point_id: str) -> Path:
    return base / vm / point_id


def remove_workdir(workdir: Path) -> list[str]:
    """Delete one cut's work directory, and the VM's folder when no other backup of it is under way."""
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        workdir.parent.rmdir()
    except OSError:
        pass                            # not empty: another backup's work directory, or a leftover sweep removes
    return [f"could not delete work directory {workdir}"] if workdir.exists() else []


def sweep_workdirs(base: Path, vm: str) -> list[str]:
    """Delete work directories of earlier, interrupted backups of ``vm`` (caller holds the VM's lock)."""
    stale = sorted(p for p in (base / vm).glob("*") if p.is_dir()) if (base / vm).is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return [str(p) for p in stale]
