"""``cutpoint restore``: a point's disks as image files, as a new VM, onto the original's disks, or instantly."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..jobs.record import recorded
from ..restore.images import FORMATS, restore_point
from ..restore.nbdserve import export_passphrase
from ..vault.manifest import Manifest
from ..vault.vault import Vault
from .common import add_vault_arg, open_vault, print_json
from .progress import ProgressLine


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("restore", help="restore a point: image files, a new VM, the original's disks, or instantly")
    p.add_argument("name", help="the VM")
    p.add_argument("point", help="point id, a unique prefix of it, or 'latest'")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--new-vm", metavar="NEWNAME", help="restore as a new VM beside the original (disks, rewritten "
                     "command line as start.sh and vm.json)")
    how.add_argument("--replace", action="store_true", help="write the point back onto the original's disk files "
                     "(the VM must be stopped); only differing chunks are written")
    how.add_argument("--instant", metavar="NEWNAME", help="start a new VM at once on local overlays backed by the "
                     "point over NBD; data moves local in the background ('cutpoint instant finish')")
    p.add_argument("--to", type=Path, help="directory for the images (required for a plain restore; for --new-vm "
                   "and --instant the new VM's directory, default $CUTPOINT_VMS/NEWNAME)")
    p.add_argument("--format", choices=FORMATS, default=None, help="image format (default raw; qcow2 for --new-vm)")
    p.add_argument("--start", action="store_true", help="with --new-vm: start it and protect it under NEWNAME")
    p.add_argument("--json", action="store_true")
    add_vault_arg(p)
    p.set_defaults(func=cmd_restore)


@contextmanager
def point_of(vault: Vault, args: argparse.Namespace) -> Iterator[Manifest]:
    """The manifest of ``args.name``/``args.point``, with the vault's points held (no prune) while it is used."""
    if not vault.catalog.points(args.name):
        vault.catalog.vm(args.name)        # unknown VM: says so; known VM: falls through to "no such point"
    rec = vault.catalog.point(args.name, args.point)
    with vault.points_lock(shared=True):
        yield vault.manifest(rec)


def cmd_restore(args: argparse.Namespace) -> int:
    if args.start and not args.new_vm:
        raise UsageError("--start goes with --new-vm NEWNAME")
    if not (args.new_vm or args.replace or args.instant) and args.to is None:
        raise UsageError("say where to restore: --to DIR (image files), --new-vm NEWNAME, --replace or --instant "
                         "NEWNAME")
    if (args.replace or args.instant) and args.format:
        raise UsageError("--format applies to image files and --new-vm only")
    if args.replace and args.to:
        raise UsageError("--replace writes onto the VM's own disk files; --to does not apply")
    vault = open_vault(args, create=False)
    export_passphrase(getattr(args, "passphrase_file", None))
    progress = ProgressLine(not args.json)
    key_file = getattr(args, "key_file", None)
    with recorded(vault, "restore", args.name) as job, point_of(vault, args) as m:
        if (args.new_vm or args.replace or args.instant) and (m.vm_config or {}).get("type") == "libvirt":
            from ..restore.libvirt_restore import (
                restore_cli,  # a libvirt domain's point: libvirt_restore.py
            )
            res = restore_cli(vault, m, args, progress)
        elif args.new_vm:
            from ..restore.new_vm import restore_new_vm
            res = restore_new_vm(vault, m, args.new_vm, to=args.to, fmt=args.format or "qcow2", start=args.start,
                                 progress=progress)
        elif args.replace:
            from ..restore.replace import replace_disks
            addr = _address(vault, args.name)
            with vault.vm_lock(args.name):          # no backup of this VM while its disks are rewritten
                res = replace_disks(vault, m, qmp=addr, progress=progress)
        elif args.instant:
            from ..restore.instant import instant_restore
            res = instant_restore(vault, m, args.instant, to=args.to, key_file=key_file)
        else:
            files = restore_point(vault, m, args.to, args.format or "raw", progress)
            res = {"mode": "images", "vm": m.vm, "point": m.point, "bytes": sum(f.size for f in files),
                   "files": [{"disk": f.disk, "path": str(f.path), "size": f.size} for f in files]}
        job.done(nbytes=int(res.get("bytes") or 0), point=m.point, detail=job_detail(res))
    if args.json:
        print_json(res)
    else:
        _print(res)
    return 0


def job_detail(res: dict[str, Any]) -> dict[str, Any]:
    """What a restore job keeps of its JSON result: the scalars (mode, dir, bytes written, ...) and the per-disk or
    per-file lists, not the command line or the QEMU config."""
    return {k: v for k, v in res.items() if isinstance(v, (str, int, float, bool, type(None)))
            or k in ("files", "disks")}


def _address(vault: Vault, name: str) -> str | None:
    from ..errors import NotFoundError
    try:
        return vault.catalog.vm(name).address
    except NotFoundError:
        return None


def _print(res: dict[str, Any]) -> None:
    mode = res["mode"]
    if mode in ("new-domain", "replace-domain"):
        from ..restore.libvirt_restore import describe
        print("\n".join(describe(res)))
    elif mode == "images":
        for f in res["files"]:
            print(f"{f['disk']}: {f['path']} ({f['size']} bytes)")
    elif mode == "new-vm":
        state = f"started (pid {res['pid']}, QMP {res['qmp']}) and protected as {res['new_vm']!r}" if res["started"] \
            else f"not started: run {res['script']}"
        print(f"restored point {res['point']} of {res['vm']!r} as VM {res['new_vm']!r} in {res['dir']}: {state}")
        for d in res["disks"]:
            print(f"  {d['name']}: {d['path']}")
    elif mode == "replace":
        for d in res["disks"]:
            resized = f", resized from {d['resized_from']} bytes" if d["resized_from"] is not None else ""
            print(f"{d['disk']}: {d['path']}: compared {d['bytes_compared']} bytes, wrote {d['bytes_written']} "
                  f"({d['chunks_written']} of {d['chunks']} chunks){resized}")
    elif mode == "instant":
        print(f"VM {res['new_vm']!r} runs from point {res['point']} (up in {res['time_to_running_s']} s, pid "
              f"{res['pid']}, QMP {res['qmp']}); data is streaming to {res['dir']}; "
              f"'cutpoint instant status {res['new_vm']}', then 'cutpoint instant finish {res['new_vm']}'")
    for w in res.get("warnings", []):
        print(f"warning: {w}")
