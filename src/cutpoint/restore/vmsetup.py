"""What every new VM from a point shares (new VM, new domain, instant): its name, directory and registration; and
the QEMU command line of a QMP VM's point.

A new VM must not clash with anything that exists: not with a registered VM, not with points kept under that name
(a later backup would chain onto another VM's history), not with a non-empty directory. Everything created for it
lives in one directory, so a failure removes exactly that.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..catalog.db import VmRecord
from ..errors import NotFoundError, UsageError
from ..paths import vms_home
from ..names import check_vm_name
from ..vault.manifest import Manifest
from ..vault.vault import Vault
from ..vmconfig import QmpVmConfig
from . import private
from .cmdline import DiskTarget, Rewritten, rewrite
from .config import synthesize_argv
from .driver import Registration

def check_new_name(vault: Vault, name: str) -> None:
    check_vm_name(name)                 # the one rule (names.py): the name becomes directories and a catalog row
    try:
        vault.catalog.vm(name)
    except NotFoundError:
        pass
    else:
        raise UsageError(f"a VM named {name!r} is already registered; choose another name for the restored VM")
    if vault.catalog.points(name):
        raise UsageError(f"the vault holds points of a VM named {name!r}; choose another name for the restored VM")


def qmp_config(m: Manifest, cfg: QmpVmConfig | None) -> QmpVmConfig:
    """The point's QEMU configuration, or why a VM cannot be made from this point."""
    if cfg is None:
        raise NotFoundError(f"point {m.point} of VM {m.vm!r} has no VM configuration (it was taken before cutpoint "
                            f"kept one); restore its disks with 'cutpoint restore {m.vm} {m.point} --to DIR' and "
                            "start them by hand")
    return cfg


def dir_for(to: Path | None, name: str) -> Path:
    """The new VM's directory: ``to``, else ``$CUTPOINT_VMS/NAME``; it must not exist or be empty."""
    d = (to or vms_home() / name).expanduser().absolute()
    if d.exists() and (not d.is_dir() or any(d.iterdir())):
        raise UsageError(f"{d} already exists and is not an empty directory; choose another --to")
    return d


def make_dir(d: Path) -> bool:
    """Create the (checked) directory 0700 (it holds the VM's disks and its command line); True when it did not
    exist. ``remove_dir`` undoes it."""
    created = not os.path.lexists(d)
    private.make_private_dir(d)
    return created


def remove_dir(d: Path, created: bool = True) -> None:
    """Remove what was created for a failed restore: the directory when this restore made it, else what it put into
    the empty directory it was given."""
    if created:
        shutil.rmtree(d, ignore_errors=True)
        return
    for p in d.iterdir() if d.is_dir() else []:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def targets(m: Manifest, cfg: QmpVmConfig, paths: dict[str, Path], fmt: str) -> list[DiskTarget]:
    facts = {d.name: d for d in cfg.disks}
    return [DiskTarget(name=d.name, node=d.node, device=facts[d.name].device if d.name in facts else "",
                       filename=d.filename, path=paths[d.name], fmt=fmt,
                       model=facts[d.name].model if d.name in facts else "") for d in m.disks]


def command_line(m: Manifest, cfg: QmpVmConfig, name: str, vmdir: Path, disks: list[DiskTarget]) -> Rewritten:
    """The new VM's command line, from the captured one (or synthesized from QMP facts)."""
    if cfg.argv:
        argv, cwd = list(cfg.argv), str(cfg.cwd or vmdir)
    else:
        argv, cwd = synthesize_argv(cfg.facts), str(vmdir)
    files = {d.name: d.filename for d in cfg.disks}
    excluded = {k["name"]: files.get(k["name"], "") for k in m.skipped
                if str(k.get("reason", "")).startswith("excluded")}
    rw = rewrite(argv, cwd, name=name, vmdir=vmdir, disks=disks, qmp_address=cfg.qmp_address, excluded=excluded)
    rw.warnings = list(cfg.warnings) + rw.warnings
    return rw


def write_spec(vmdir: Path, rw: Rewritten, extra: dict[str, Any]) -> tuple[Path, Path]:
    """``vm.json`` (what cutpoint knows about the VM) and ``start.sh`` (runnable) next to the disks."""
    spec = vmdir / "vm.json"
    private.write(spec, (json.dumps(dict(rw.to_json(), **extra), indent=1) + "\n").encode())
    script = vmdir / "start.sh"
    private.write(script, rw.script().encode(), 0o700)
    return spec, script


def register(vault: Vault, name: str, reg: Registration) -> None:
    vault.catalog.add_vm(VmRecord(name, reg.kind, reg.address,
                                  datetime.now(timezone.utc).isoformat(timespec="seconds"), reg.settings))


def unregister(vault: Vault, name: str) -> None:
    try:
        vault.catalog.remove_vm(name)
    except NotFoundError:
        pass


def rate(nbytes: int, seconds: float) -> int:
    return round(nbytes / max(seconds, 1e-6))
