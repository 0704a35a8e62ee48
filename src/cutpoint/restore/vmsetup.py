"""What restoring a point as a new VM and instant restore share: the new name, its directory, its command line.

A new VM must not clash with anything that exists: not with a registered VM, not with points kept under that name
(a later backup would chain onto another VM's history), not with a non-empty directory. Everything created for it
lives in one directory, so a failure removes exactly that.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..catalog.db import VmRecord
from ..errors import CutpointError, NotFoundError, UnsupportedError, UsageError
from ..paths import vms_home
from ..names import check_vm_name
from ..vault.manifest import Manifest
from ..vault.vault import Vault
from .cmdline import DiskTarget, Rewritten, rewrite
from .config import synthesize_argv

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


def vm_config(m: Manifest) -> dict[str, Any]:
    cfg = getattr(m, "vm_config", None)
    if not cfg:
        raise NotFoundError(f"point {m.point} of VM {m.vm!r} has no VM configuration (it was taken before cutpoint "
                            f"kept one); restore its disks with 'cutpoint restore {m.vm} {m.point} --to DIR' and "
                            "start them by hand")
    if cfg.get("type", "qmp") != "qmp":
        raise UnsupportedError(f"point {m.point} of VM {m.vm!r} was taken through {cfg.get('type')}; a new VM from "
                               "it is defined from the saved configuration with that tool (restore the disks with "
                               "--to DIR)")
    return cfg


def make_dir(to: Path | None, name: str) -> Path:
    """The new VM's directory: must not exist or be empty. Created here; ``remove_dir`` undoes it."""
    d = (to or vms_home() / name).expanduser().absolute()
    if d.exists() and (not d.is_dir() or any(d.iterdir())):
        raise UsageError(f"{d} already exists and is not an empty directory; choose another --to")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CutpointError(f"cannot create {d}: {exc.strerror or exc}") from exc
    return d


def remove_dir(d: Path) -> None:
    """Remove what was created for a failed restore (the directory was empty or absent before)."""
    shutil.rmtree(d, ignore_errors=True)


def targets(m: Manifest, cfg: dict[str, Any], paths: dict[str, Path], fmt: str) -> list[DiskTarget]:
    models = {d["name"]: d.get("model", "") for d in cfg.get("qmp", {}).get("disks", [])}
    devices = {d["name"]: d.get("device", "") for d in cfg.get("qmp", {}).get("disks", [])}
    return [DiskTarget(name=d.name, node=d.node, device=devices.get(d.name, ""), filename=d.filename,
                       path=paths[d.name], fmt=fmt, model=models.get(d.name, "")) for d in m.disks]


def command_line(m: Manifest, cfg: dict[str, Any], name: str, vmdir: Path, disks: list[DiskTarget]) -> Rewritten:
    """The new VM's command line, from the captured one (or synthesized from QMP facts)."""
    if cfg.get("argv"):
        argv, cwd = list(cfg["argv"]), str(cfg.get("cwd") or vmdir)
    else:
        argv, cwd = synthesize_argv(cfg.get("qmp", {})), str(vmdir)
    files = {d["name"]: d.get("filename", "") for d in cfg.get("qmp", {}).get("disks", [])}
    excluded = {k["name"]: files.get(k["name"], "") for k in m.skipped
                if str(k.get("reason", "")).startswith("excluded")}
    rw = rewrite(argv, cwd, name=name, vmdir=vmdir, disks=disks, qmp_address=str(cfg.get("qmp_address", "")),
                 excluded=excluded)
    rw.warnings = list(cfg.get("warnings", [])) + rw.warnings
    return rw


def write_spec(vmdir: Path, rw: Rewritten, extra: dict[str, Any]) -> tuple[Path, Path]:
    """``vm.json`` (what cutpoint knows about the VM) and ``start.sh`` (runnable) next to the disks."""
    spec = vmdir / "vm.json"
    spec.write_text(json.dumps(dict(rw.to_json(), **extra), indent=1) + "\n")
    script = vmdir / "start.sh"
    script.write_text(rw.script())
    script.chmod(0o755)
    return spec, script


def register(vault: Vault, name: str, rw: Rewritten, settings: dict[str, Any]) -> None:
    vault.catalog.add_vm(VmRecord(name, "qmp", str(rw.qmp), datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                  settings))


def unregister(vault: Vault, name: str) -> None:
    try:
        vault.catalog.remove_vm(name)
    except NotFoundError:
        pass


def rate(nbytes: int, seconds: float) -> int:
    return round(nbytes / max(seconds, 1e-6))
