"""``restore NAME POINT --new-vm NEWNAME [--start]``: a second VM from a point, beside the original, for every driver.

The shared part lives here and only here: the new name is checked, the directory made, the disks restored whole
(qcow2 by default) into it, the driver defines the VM on them (a QEMU ``start.sh`` + ``vm.json``, or a libvirt
domain), starts it on request, and the VM is registered for protection under its new name. Any failure undoes the
driver's part and removes the directory and the registration: a failed restore leaves nothing a user could mistake
for a restored VM.
"""

from __future__ import annotations

import time

from ..vault.manifest import Manifest
from ..vault.vault import Vault
from . import vmsetup
from .driver import NewVmDone, RestoreDriver
from .images import Progress, restore_point
from .results import NewDomainResult, NewVmResult
from .targets import NewVm


def restore_new_vm(vault: Vault, m: Manifest, driver: RestoreDriver, t: NewVm,
                   progress: Progress | None = None) -> NewVmResult | NewDomainResult:
    t0 = time.monotonic()
    vmsetup.check_new_name(vault, t.name)
    machine = driver.new_machine(vault, m, t.name)
    try:
        vmdir = vmsetup.dir_for(t.to, t.name)
        machine.check(vmdir)
        created = vmsetup.make_dir(vmdir)
        started = registered = False
        try:
            files = restore_point(vault, m, vmdir, t.format, progress)
            restored_s = time.monotonic() - t0
            machine.define(vmdir, files, t.format)
            if t.start:
                machine.start()
                started = True
                vmsetup.register(vault, t.name, machine.registration())
                registered = True
        except BaseException:
            if registered:
                vmsetup.unregister(vault, t.name)
            machine.discard()
            vmsetup.remove_dir(vmdir, created)
            raise
        return machine.result(NewVmDone(vmdir, files, t.format, started, registered, restored_s,
                                        time.monotonic() - t0))
    finally:
        machine.close()
