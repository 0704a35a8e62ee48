"""The quiesce bracket: the guest-agent freeze around the atomic step of a cut, and that step's timing.

Both drivers call ``atomic`` with their one atomic call (QMP ``transaction``, libvirt ``virDomainBackupBegin``), so
the guest's filesystems stay frozen for that round trip only, never for the overlay or export set-up around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Quiesce(Protocol):
    """Brackets the atomic step of a cut (the guest-agent freeze of an app-consistent backup).

    ``freeze`` is called immediately before the step and ``thaw`` immediately after it, in every path once
    ``freeze`` was called. Neither raises: a failed freeze is recorded by the caller and the cut goes on
    crash-consistent, which is why a driver never has to handle it."""

    def freeze(self) -> None: ...

    def thaw(self) -> None: ...


def atomic(step: Callable[[], object], quiesce: Quiesce | None) -> float:
    """Run ``step`` inside ``quiesce``'s freeze and thaw; return how long the step took (the guest's pause), in ms."""
    if quiesce is not None:
        quiesce.freeze()
    try:
        t0 = time.perf_counter()
        step()
        return (time.perf_counter() - t0) * 1000.0
    finally:
        if quiesce is not None:
            quiesce.thaw()
