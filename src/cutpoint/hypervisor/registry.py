"""Which driver serves a registered VM: chosen by the VM's ``kind`` in the catalog."""

from __future__ import annotations

from pathlib import Path

from ..catalog.db import VmRecord
from ..errors import UsageError
from .driver import Driver
from .qmp_driver import QmpDriver


def driver_for(vm: VmRecord) -> Driver:
    if vm.kind == "qmp":
        return QmpDriver(Path(vm.address), vm.name)
    if vm.kind == "libvirt":
        from .libvirt_driver import DEFAULT_URI, LibvirtDriver   # libvirt's bindings only where they are needed

        return LibvirtDriver(vm.address, str(vm.settings.get("connect") or DEFAULT_URI), vm.name)
    raise UsageError(f"VM {vm.name!r} is of kind {vm.kind!r}, which this cutpoint cannot back up")
