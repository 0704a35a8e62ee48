"""What every driver's cleanup shares: each step attempted, failures collected; the work directories removed.

Cleanup runs after every backup, successful or not, and again before every backup (a driver's ``sweep``), so that
whatever a killed cutpoint process left behind is removed. A failed step must neither stop the steps after it nor
vanish: it becomes a problem the backup records as a warning on its result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .. import workdir
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
    return workdir.point_path(vm, point_id, base)          # both names checked (names.py)


def remove_workdir(path: Path) -> list[str]:
    """Delete one cut's work directory, and the VM's folder when no other backup of it is under way; never through
    a link (``workdir.remove_workdir``)."""
    return workdir.remove_workdir(path)


def sweep_workdirs(base: Path, vm: str) -> list[str]:
    """Delete work directories of earlier, interrupted backups of ``vm`` (caller holds the VM's lock); only below
    ``vm``'s own checked directory."""
    return workdir.sweep(vm, base)
