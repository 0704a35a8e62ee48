"""The one way anything is restored: ``restore(vault, vm, point, target)``. The CLI, the API and the service call it.

It takes the locks once, the same for every caller (docs/format.md §16, "Locks"): the vault's points lock shared for the
whole restore, so no prune removes the point (and gc then its chunks) from under it; for a replace also the VM's
lock, so no backup or prune of that VM runs while its disks are rewritten. Under them it resolves the point (an id,
a unique prefix or ``latest``) and opens its manifest, then hands it to the target: image files here, a file copy
through ``browse``, and new VM, replace and instant through the point's restore driver (``driver.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING
from contextlib import contextmanager, nullcontext

from .. import faults
from ..vault.manifest import Manifest
from ..vault.vault import Vault
from .images import Progress, restore_point

if TYPE_CHECKING:
    from .drill import DrillOptions, DrillResult
from .results import FilesResult, ImagesResult, RestoreResult
from .targets import Files, Images, Instant, NewVm, Replace, Target, confine

FAULT_STAGE = "restore-progress"
"""Fault-injection stage (tests only, ``faults.py``): hit on every progress step of a restore, with its locks held."""


@contextmanager
def opened_point(vault: Vault, vm: str, point: str, *, hold_vm: bool = False) -> Iterator[Manifest]:
    """Point ``point`` of ``vm`` with the locks a restore needs held while it is used (``hold_vm``: the VM's too)."""
    with vault.points_lock(shared=True):
        if not vault.catalog.points(vm):
            vault.catalog.vm(vm)           # unknown VM: says so; known VM: falls through to "no such point"
        rec = vault.catalog.point(vm, point)
        with vault.vm_lock(vm) if hold_vm else nullcontext():
            yield vault.manifest(rec)


def restore(vault: Vault, vm: str, point: str, target: Target, *, progress: Progress | None = None
            ) -> RestoreResult:
    """Restore point ``point`` of ``vm`` to ``target``; raises a ``CutpointError`` with nothing left behind."""
    with opened_point(vault, vm, point, hold_vm=isinstance(target, Replace)) as m:
        return _dispatch(vault, m, target, _seam(progress))


def drill(vault: Vault, vm: str, point: str, opts: "DrillOptions") -> "DrillResult":
    """Drill point ``point`` of ``vm`` (``restore/drill.py``) under the shared points lock, and keep the verdict
    with the point in the catalog."""
    from datetime import datetime, timezone

    from .. import vmconfig
    from ..catalog.db import DrillRecord
    from ..errors import UnsupportedError
    from .drill import drill as run
    from .vmsetup import qmp_config
    with opened_point(vault, vm, point) as m:
        cfg = vmconfig.parse(m.vm_config, f"point {m.point} of VM {m.vm!r}")
        if isinstance(cfg, vmconfig.LibvirtVmConfig):
            raise UnsupportedError(f"point {m.point} of VM {m.vm!r} is a libvirt domain's; drills boot QMP VMs' "
                                   "points only so far")
        res = run(vault, m, qmp_config(m, cfg), opts)
        vault.catalog.set_drill(DrillRecord(m.point, res.verdict,
                                            datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                            res.to_json()))
    return res


def _dispatch(vault: Vault, m: Manifest, t: Target, progress: Progress) -> RestoreResult:
    if isinstance(t, Images):
        to = confine(t.to, t.within) if t.within is not None else t.to
        return ImagesResult(m.vm, m.point, restore_point(vault, m, to, t.format, progress))
    if isinstance(t, Files):
        from .browse import get_files
        return FilesResult(m.vm, m.point, get_files(vault, m, t.disk, t.path, t.to, t.part, t.key_file,
                                                            max_bytes=t.max_bytes, warn=t.warn))
    from .driver import driver_for
    driver = driver_for(vault, m)
    if isinstance(t, NewVm):
        from .new_vm import restore_new_vm
        return restore_new_vm(vault, m, driver, t, progress)
    if isinstance(t, Replace):
        return driver.replace(vault, m, progress)
    if isinstance(t, Instant):
        return driver.instant(vault, m, t)
    raise TypeError(f"not a restore target: {t!r}")


def _seam(progress: Progress | None) -> Progress:
    def step(name: str, done: int, total: int) -> None:
        faults.hit(FAULT_STAGE)
        if progress is not None:
            progress(name, done, total)
    return step
