"""``cutpoint restore``: a point's disks as image files, as a new VM, onto the original's disks, or instantly."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..restore.targets import FORMATS, Images, Instant, NewVm, Replace, Target
from .common import add_vault_arg, open_vault, print_json
from .progress import ProgressLine

if TYPE_CHECKING:
    from ..restore.results import RestoreResult
    from ..vault.manifest import Manifest
    from ..vault.vault import Vault


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
    from ..restore.orchestrator import opened_point

    with opened_point(vault, args.name, args.point) as m:
        yield m


def target_of(args: argparse.Namespace) -> Target:
    """The restore target the flags ask for (checked for combinations that make no sense)."""
    if args.start and not args.new_vm:
        raise UsageError("--start goes with --new-vm NEWNAME")
    if not (args.new_vm or args.replace or args.instant) and args.to is None:
        raise UsageError("say where to restore: --to DIR (image files), --new-vm NEWNAME, --replace or --instant "
                         "NEWNAME")
    if (args.replace or args.instant) and args.format:
        raise UsageError("--format applies to image files and --new-vm only")
    if args.replace and args.to:
        raise UsageError("--replace writes onto the VM's own disk files; --to does not apply")
    if args.new_vm:
        return NewVm(args.new_vm, to=args.to, format=args.format or "qcow2", start=args.start)
    if args.replace:
        return Replace()
    if args.instant:
        return Instant(args.instant, to=args.to, key_file=getattr(args, "key_file", None))
    return Images(args.to, format=args.format or "raw")


def cmd_restore(args: argparse.Namespace) -> int:
    from ..jobs.record import recorded
    from ..restore.nbdserve import export_passphrase
    from ..restore.orchestrator import restore
    from ..restore.results import job_detail

    target = target_of(args)
    vault = open_vault(args, create=False)
    export_passphrase(getattr(args, "passphrase_file", None))
    with recorded(vault, "restore", args.name) as job, ProgressLine(not args.json) as progress:
        res = restore(vault, args.name, args.point, target, progress=progress)
        out = res.to_json()
        job.done(nbytes=res.nbytes, point=res.point, detail=job_detail(out))
    if args.json:
        print_json(out)
    else:
        print("\n".join(describe(res)))
    return 0


def describe(res: RestoreResult) -> list[str]:
    """The plain (not --json) account of a restore."""
    from ..restore.results import (ImagesResult, InstantResult, NewDomainResult, NewVmResult, ReplaceDomainResult,
                                   ReplaceResult)

    lines: list[str] = []
    if isinstance(res, ImagesResult):
        lines += [f"{f.disk}: {f.path} ({f.size} bytes)" for f in res.files]
    elif isinstance(res, NewVmResult):
        state = f"started (pid {res.pid}, QMP {res.qmp}) and protected as {res.new_vm!r}" if res.started \
            else f"not started: run {res.script}"
        lines.append(f"restored point {res.point} of {res.vm!r} as VM {res.new_vm!r} in {res.dir}: {state}")
        lines += [f"  {d.name}: {d.path}" for d in res.disks]
    elif isinstance(res, NewDomainResult):
        state = "started and protected under that name" if res.started else \
            f"defined, not started (virsh -c {res.connect} start {res.domain})"
        lines.append(f"restored point {res.point} of {res.vm!r} as libvirt domain {res.domain!r} in {res.dir}: "
                     f"{state}")
        lines += [f"  {d.name}: {d.path}" for d in res.disks]
        lines += [f"  left out (not in the point): {', '.join(res.dropped)}"] if res.dropped else []
    elif isinstance(res, ReplaceResult):
        for r in res.disks:
            resized = f", resized from {r.resized_from} bytes" if r.resized_from is not None else ""
            lines.append(f"{r.disk}: {r.path}: compared {r.bytes_compared} bytes, wrote {r.bytes_written} "
                         f"({r.chunks_written} of {r.chunks} chunks){resized}")
    elif isinstance(res, ReplaceDomainResult):
        lines += [f"{r.disk}: {r.path} replaced ({r.size} bytes, {r.format}; wrote {r.bytes_written} of "
                  f"{r.bytes_compared} bytes compared)" for r in res.disks]
        if res.checkpoints_dropped:
            lines.append(f"dropped checkpoints {', '.join(res.checkpoints_dropped)}: the next backup reads in full")
    elif isinstance(res, InstantResult):
        lines.append(f"VM {res.new_vm!r} runs from point {res.point} (up in {res.time_to_running_s} s, pid "
                     f"{res.pid}, QMP {res.qmp}); data is streaming to {res.dir}; "
                     f"'cutpoint instant status {res.new_vm}', then 'cutpoint instant finish {res.new_vm}'")
    warnings = res.warnings if isinstance(res, (NewVmResult, InstantResult)) else []
    return lines + [f"warning: {w}" for w in warnings]
