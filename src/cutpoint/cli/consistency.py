"""The consistency-type part of ``cutpoint vm``: the ``vm set`` options and the per-disk support verdicts of
``vm add``. Kept apart from cli/vm.py so that the VM command group stays one screen."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .common import table

if TYPE_CHECKING:
    from ..backup.validation import Checked
    from ..cut.disks import Inventory
    from ..vault.vault import Vault


def add_consistency_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--consistency", choices=("app", "crash"),
                   help="default consistency type of this VM's backups: app (guest agent freezes the filesystems; "
                        "falls back to crash, recording why) or crash (the cut alone)")
    p.add_argument("--pre-script", metavar="PATH", help="program in the guest run (through the guest agent) before "
                   "the freeze of an app-consistent backup; '' removes it")
    p.add_argument("--post-script", metavar="PATH", help="program in the guest run after the thaw; '' removes it")
    p.add_argument("--exclude-disk", metavar="DISK", action="append", default=[],
                   help="leave this disk out of every point (recorded on each point); repeatable")
    p.add_argument("--include-disk", metavar="DISK", action="append", default=[],
                   help="take a disk excluded earlier back in; repeatable")
    p.add_argument("--agent-socket", metavar="PATH", help="the guest agent's unix socket, when it cannot be found "
                   "over QMP (query-chardev); '' to find it again")
    p.add_argument("--freeze-timeout", type=float, metavar="SECONDS",
                   help="hard limit on guest-fsfreeze-freeze before falling back to crash-consistent (default 10)")


def set_consistency(vault: Vault, args: argparse.Namespace) -> bool:
    """Apply the consistency options of ``vm set``; False when none was given."""
    given = (args.consistency, args.pre_script, args.post_script, args.agent_socket, args.freeze_timeout)
    if all(v is None for v in given) and not args.exclude_disk and not args.include_disk:
        return False
    from ..backup.consistency import update_settings

    vm = vault.catalog.vm(args.name)
    new = update_settings(vm.settings, consistency=args.consistency, pre_script=args.pre_script,
                          post_script=args.post_script, exclude=args.exclude_disk, include=args.include_disk,
                          agent_socket=args.agent_socket, freeze_timeout=args.freeze_timeout)
    vault.catalog.update_vm(args.name, settings=new)
    parts = [f"{new.get('consistency') or 'crash'}-consistent"]
    for key in ("pre_script", "post_script", "agent_socket", "freeze_timeout"):
        if new.get(key):
            parts.append(f"{key.replace('_', '-')} {new[key]}")
    if new.get("exclude_disks"):
        parts.append("excluded: " + ", ".join(new["exclude_disks"]))
    print(f"VM {args.name!r}: " + "; ".join(parts))
    return True


def verdicts(inv: Inventory, vm: str) -> Checked:
    from ..backup.validation import check

    return check(inv, {}, vm)


def disk_rows(inv: Inventory, checked: Checked) -> str:
    """The ``vm add`` table: each block device with its cache mode and support verdict, then the reasons."""
    by_name = {d.name: d for d in inv.disks}
    rows = []
    notes = []
    for v in checked.verdicts:
        d = by_name.get(v.disk)
        rows.append([v.disk, d.address if d else "-", d.driver if d else "-", d.size if d else "-", v.cache or "-",
                     v.state if v.state != "skipped" else f"skipped: {v.reason}"])
        if v.state == "refused":
            notes.append(f"refused: {v.reason}")
        notes += [f"warning: {w}" for w in v.warnings]
    return "\n".join([table(["disk", "node", "format", "size", "cache", "verdict"], rows)] + notes)
