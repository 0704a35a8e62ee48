"""``cutpoint backup``: take an atomic cut of all disks of a VM and store it as a restore point."""

from __future__ import annotations

import argparse

from ..units import human
from .common import add_vault_arg, open_vault, print_json, table
from .progress import ProgressLine


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("backup", help="back up a protected VM now")
    p.add_argument("name")
    p.add_argument("--full", action="store_true", help="read every disk in full, not only what changed")
    p.add_argument("--consistency", choices=("app", "crash"), default=None,
                   help="app: freeze the guest's filesystems through its guest agent for the cut (falls back to "
                        "crash-consistent, saying why, if that fails); crash: the cut alone. Default: the VM's "
                        "setting ('cutpoint vm set NAME --consistency'), else crash")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_vault_arg(p)
    p.set_defaults(func=cmd_backup)


def cmd_backup(args: argparse.Namespace) -> int:
    from ..backup.run import BackupOptions, backup
    from ..jobs.record import recorded

    vault = open_vault(args, write=f"backup of VM {args.name!r}")
    vault.catalog.vm(args.name)              # an unknown VM is an error, not a failed job
    with recorded(vault, "backup", args.name) as job, ProgressLine(not args.json) as bar:
        res = backup(vault, args.name, BackupOptions(full=args.full, progress=bar, consistency=args.consistency))
        job.done(nbytes=res.read_bytes, point=res.point, detail={"mode": res.mode, "pause_ms": res.pause_ms})
    if args.json:
        print_json(res.to_json())
        return 0
    print(f"point {res.point} of VM {res.vm}: {res.consistency}-consistent, {res.mode}"
          + (f" ({res.full_reason})" if res.full_reason else "")
          + f", guest I/O paused {res.pause_ms:.1f} ms"
          + (f", filesystems frozen {res.frozen_ms:.1f} ms" if res.frozen_ms is not None else "")
          + f", {res.duration_s:.1f} s")
    if res.fallback_reason:
        print(f"requested {res.requested}-consistent, got {res.consistency}-consistent: {res.fallback_reason}")
    print(table(["disk", "size", "read", "stored"],
                [[d.name, human(d.size), human(d.read_bytes), human(d.stored_bytes)] for d in res.disks]))
    for k in res.skipped:
        print(f"skipped {k['name']}: {k['reason']}")
    for w in res.warnings:
        print(f"warning: {w}")
    return 0
