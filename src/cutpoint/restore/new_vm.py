"""``restore NAME POINT --new-vm NEWNAME [--start]``: a second VM from a point, beside the original.

Disks are restored whole (qcow2 by default) into the new VM's directory, the captured command line is rewritten
(``cmdline.py``) and written as ``start.sh`` + ``vm.json``; with ``start`` QEMU is started and the VM registered for
protection under its new name. Any failure removes the directory and the registration: a failed restore leaves
nothing a user could mistake for a restored VM.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..vault.manifest import Manifest
from ..vault.vault import Vault
from . import launch, vmsetup
from .images import Progress, restore_point


def restore_new_vm(vault: Vault, m: Manifest, new_name: str, *, to: Path | None = None, fmt: str = "qcow2",
                   start: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    t0 = time.monotonic()
    vmsetup.check_new_name(vault, new_name)
    cfg = vmsetup.vm_config(m)
    vmdir = vmsetup.make_dir(to, new_name)
    pid = None
    registered = False
    rw = None
    try:
        files = restore_point(vault, m, vmdir, fmt, progress)
        paths = {f.disk: f.path for f in files}
        rw = vmsetup.command_line(m, cfg, new_name, vmdir, vmsetup.targets(m, cfg, paths, fmt))
        restored_s = time.monotonic() - t0
        extra = {"name": new_name, "restored_from": {"vm": m.vm, "point": m.point}, "source": cfg.get("source"),
                 "disks": [{"name": f.disk, "path": str(f.path), "size": f.size, "format": fmt} for f in files]}
        spec, script = vmsetup.write_spec(vmdir, rw, extra)
        if start:
            pid = launch.start(rw, vmdir / "qemu.log")
            vmsetup.register(vault, new_name, rw, {"restored_from": {"vm": m.vm, "point": m.point},
                                                   "dir": str(vmdir), "pid": pid})
            registered = True
    except BaseException:
        if pid and rw is not None:
            launch.stop(rw.qmp, pid)
        if registered:
            vmsetup.unregister(vault, new_name)
        vmsetup.remove_dir(vmdir)
        raise
    total = sum(f.size for f in files)
    return {
        "mode": "new-vm", "vm": m.vm, "point": m.point, "new_vm": new_name, "dir": str(vmdir),
        "disks": extra["disks"], "script": str(script), "config": str(spec), "config_source": cfg.get("source"),
        "qmp": str(rw.qmp), "started": start, "pid": pid, "registered": registered, "warnings": rw.warnings,
        "bytes": total, "restore_s": round(restored_s, 3), "duration_s": round(time.monotonic() - t0, 3),
        "rate_bytes_s": vmsetup.rate(total, restored_s),
    }
