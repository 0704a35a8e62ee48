"""The one interface between a backup and the hypervisor that runs the VM.

A backup needs four things from a hypervisor: the VM's disks, whether each disk's change tracking still reaches back
to the previous point, an atomic cut of all disks exported over NBD, and the removal of everything the cut created.
The QMP driver (a QEMU reached by its monitor socket) and the libvirt driver (a domain, cut through libvirt's backup
API) implement this; the cut orchestration, vault and catalog never learn which one they talk to.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from .agent import GuestAgent
from .disks import Disk, Inventory
from .quiesce import Quiesce


@dataclass
class ReadTarget:
    """Where the frozen state of one disk can be read, and the bitmap context naming what changed."""

    disk: Disk
    export: str
    bitmap: str | None          # NBD meta context qemu:dirty-bitmap:<bitmap>, None for a full read


@dataclass
class CutHandle:
    """A cut in place: readable over ``nbd_socket`` until the driver releases it."""

    nbd_socket: Path
    targets: list[ReadTarget]
    pause_ms: float
    state: Any = None                             # the driver's own record of what to take out again
    warnings: list[str] = field(default_factory=list)


class DriverSession(ABC):
    """A short hold on the hypervisor, for discovery and the cut only (reading does not need it)."""

    @abstractmethod
    def sweep(self, workdirs: Path) -> list[str]:
        """Remove leftovers of interrupted cutpoint runs on this VM; return what was removed."""

    @abstractmethod
    def inventory(self) -> Inventory:
        """The VM's disks now, and the block devices that are skipped (with why)."""

    @abstractmethod
    def chain(self, disk: Disk, prev_point: str | None) -> str | None:
        """Make the disk's change tracking since ``prev_point`` usable; return why it cannot be, or None."""

    @abstractmethod
    def cut(self, disks: list[Disk], point_id: str, since: dict[str, str | None], workdir: Path,
            quiesce: Quiesce | None = None) -> CutHandle:
        """Cut all ``disks`` atomically; ``since[disk]`` is the previous point to read changes from, or None.

        ``quiesce`` (the guest-agent freeze) brackets the atomic step alone (``cut.quiesce.atomic``). On failure
        everything created so far has been released before the exception propagates."""

    def agent(self) -> GuestAgent | None:
        """The VM's guest agent, or None when the VM has none (the backup then falls back to crash-consistent).
        Raises ``AgentError`` with the reason when a channel exists but cannot be used."""
        return None

    def capture_config(self) -> dict[str, Any] | None:
        """What is needed to start the VM again (command line, domain XML, ...), if the driver can tell."""
        return None

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "DriverSession":
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class Driver(ABC):
    kind: str

    @abstractmethod
    def session(self) -> DriverSession: ...

    @abstractmethod
    def describe(self) -> Inventory:
        """The VM's disks and skipped devices, for registering it (``vm add``); a libvirt domain may be shut off."""

    @abstractmethod
    def release(self, handle: CutHandle, success: bool) -> list[str]:
        """Take the cut out again (after success or failure); return problems that could not be fixed."""
