"""The per-hypervisor half of a restore: define, start and replace, behind one interface.

The orchestrator does what every restore shares (locks, the point, the new VM's name, directory and registration,
removing all of it on failure, the vault pre-check before a replace writes); a driver does only what its hypervisor
needs. ``driver_for`` picks the driver from the point's typed VM configuration: the QMP driver (a QEMU command line)
or the libvirt driver (a domain definition).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import vmconfig
from ..errors import UsageError
from ..vault.manifest import Manifest
from ..vault.vault import Vault
from .images import Progress, RestoredFile
from .results import InstantResult, NewDomainResult, NewVmResult, ReplaceDomainResult, ReplaceResult
from .targets import Instant


@dataclass(frozen=True)
class Registration:
    """How a started new VM is protected: its catalog row's kind, address and settings."""

    kind: str
    address: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewVmDone:
    """What the shared part of a new-VM restore did, for the driver's result."""

    dir: Path
    files: list[RestoredFile]
    format: str
    started: bool
    registered: bool
    restore_s: float
    duration_s: float


class NewMachine(ABC):
    """One new VM being made from a point. The orchestrator calls ``check``, then (after restoring the images into
    the new directory) ``define`` and, on request, ``start``; on any failure ``discard``, and ``close`` always."""

    def check(self, vmdir: Path) -> None:
        """Before anything is created: refuse what cannot work (a name the hypervisor already has, a directory it
        cannot reach)."""

    @abstractmethod
    def define(self, vmdir: Path, images: list[RestoredFile], fmt: str) -> None:
        """Make the VM known (a start script, a libvirt definition) on the restored images."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def registration(self) -> Registration: ...

    @abstractmethod
    def discard(self) -> None:
        """Undo ``define`` and ``start`` (best effort: another error is on its way to the user)."""

    def close(self) -> None:
        """Release the hypervisor connection, success or not."""

    @abstractmethod
    def result(self, done: NewVmDone) -> NewVmResult | NewDomainResult: ...


class RestoreDriver(ABC):
    kind: str

    @abstractmethod
    def new_machine(self, vault: Vault, m: Manifest, name: str) -> NewMachine:
        """Refuses (before anything is created) a point whose configuration cannot define a VM."""

    @abstractmethod
    def replace(self, vault: Vault, m: Manifest, progress: Progress | None
                ) -> ReplaceResult | ReplaceDomainResult:
        """Put ``m`` back onto the original VM's own disks; refuses while the VM runs. The caller holds the VM's
        lock; the driver checks the vault holds every chunk before the first write."""

    def instant(self, vault: Vault, m: Manifest, target: Instant) -> InstantResult:
        raise UsageError(f"--instant is not available for {self.kind} VMs yet; use --new-vm NAME --start")


def driver_for(vault: Vault, m: Manifest) -> RestoreDriver:
    """The driver for point ``m``, from its typed VM configuration (a point without one restores through QMP, whose
    replace needs only the manifest's disk files)."""
    cfg = vmconfig.parse(m.vm_config, f"point {m.point} of VM {m.vm!r}")
    if isinstance(cfg, vmconfig.LibvirtVmConfig):
        from .libvirt_restore import LibvirtRestoreDriver
        return LibvirtRestoreDriver(vault, m, cfg)
    from .qmp_restore import QmpRestoreDriver
    return QmpRestoreDriver(vault, m, cfg)
