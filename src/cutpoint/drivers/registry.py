"""Which driver serves a registered VM: chosen by the VM's ``kind`` in the catalog.

Takes anything shaped like the catalog's ``VmRecord`` (name, kind, address, settings), so the drivers, which rank
below the catalog, never import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ..cut.driver import Driver
from ..errors import UsageError
from .qmp.driver import QmpDriver


class VmAddress(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def settings(self) -> Mapping[str, Any]: ...


def driver_for(vm: VmAddress) -> Driver:
    if vm.kind == "qmp":
        return QmpDriver(Path(vm.address), vm.name)
    if vm.kind == "libvirt":
        from .libvirt.driver import DEFAULT_URI, LibvirtDriver   # libvirt's bindings only where they are needed

        return LibvirtDriver(vm.address, str(vm.settings.get("connect") or DEFAULT_URI), vm.name)
    raise UsageError(f"VM {vm.name!r} is of kind {vm.kind!r}, which this cutpoint cannot back up")
