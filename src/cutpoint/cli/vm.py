"""``cutpoint vm``: register VMs (by their QMP socket, or as libvirt domains), list, clean up after and remove them."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..names import check_vm_name
from .common import add_vault_arg, open_vault, print_json, table
from .consistency import add_consistency_args, disk_rows, set_consistency, verdicts

if TYPE_CHECKING:
    from ..vault.vault import Vault


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("vm", help="register and list protected VMs")
    vs = p.add_subparsers(dest="vm_command", metavar="ACTION")
    vs.required = True

    a = vs.add_parser("add", help="protect a running QEMU VM (through its QMP socket) or a libvirt domain")
    a.add_argument("name")
    how = a.add_mutually_exclusive_group(required=True)
    how.add_argument("--qmp", type=Path, help="the VM's QMP unix socket")
    how.add_argument("--libvirt", metavar="DOMAIN", help="a libvirt domain, backed up through libvirt's backup API")
    a.add_argument("--connect", metavar="URI", help="libvirt connection URI (default qemu:///system)")
    a.add_argument("--json", action="store_true")
    add_vault_arg(a)
    a.set_defaults(func=cmd_add)

    ls = vs.add_parser("list", help="list protected VMs")
    ls.add_argument("--json", action="store_true")
    add_vault_arg(ls)
    ls.set_defaults(func=cmd_list)

    st = vs.add_parser("set", help="change a protected VM's settings: backup policy, consistency type, scripts, "
                       "excluded disks")
    st.add_argument("name")
    st.add_argument("--policy", help="policy name, or 'none' to stop scheduling the VM")
    st.add_argument("--drill-console", metavar="PATTERN",
                    help="restore drills: the regular expression the VM's serial console shows once booted")
    st.add_argument("--drill-command", metavar="CMD",
                    help="restore drills: a command run in the guest through its agent, which must exit 0 "
                         "(shell words; '' removes it)")
    st.add_argument("--drill-timeout", type=float, metavar="SECONDS", help="restore drills: time for every signal")
    add_consistency_args(st)
    add_vault_arg(st)
    st.set_defaults(func=cmd_set)

    cl = vs.add_parser("cleanup", help="remove what an interrupted backup left in the VM now (NBD exports, block "
                       "jobs, overlays, a libvirt backup job, work files); the next backup does it too")
    cl.add_argument("name")
    cl.add_argument("--json", action="store_true")
    add_vault_arg(cl)
    cl.set_defaults(func=cmd_cleanup)

    rm = vs.add_parser("remove", help="stop protecting a VM (its points stay in the vault)")
    rm.add_argument("name")
    add_vault_arg(rm)
    rm.set_defaults(func=cmd_remove)


def cmd_add(args: argparse.Namespace) -> int:
    from ..catalog.db import VmRecord
    from ..drivers.registry import driver_for

    check_vm_name(args.name)            # before anything is asked of QEMU or libvirt
    if args.libvirt:
        return _add_libvirt(args)
    if args.connect:
        raise UsageError("--connect goes with --libvirt DOMAIN")
    vault = open_vault(args)
    qmp = args.qmp.expanduser().resolve()
    vm = VmRecord(args.name, "qmp", str(qmp), datetime.now(timezone.utc).isoformat(timespec="seconds"), {})
    inv = driver_for(vm).describe()
    vault.catalog.add_vm(vm)
    checked = verdicts(inv, args.name)
    if args.json:
        print_json({"vm": args.name, "qmp": str(qmp), "disks": [d.to_json() for d in inv.disks],
                    "skipped": [{"name": k.name, "reason": k.reason} for k in inv.skipped],
                    "verdicts": [v.to_json() for v in checked.verdicts]})
        return 0
    print(f"protecting VM {args.name!r} through {qmp}")
    print(disk_rows(inv, checked))
    return 0


def _add_libvirt(args: argparse.Namespace) -> int:
    from ..catalog.db import VmRecord
    from ..drivers.libvirt.driver import DEFAULT_URI   # libvirt's bindings only where they are needed
    from ..drivers.registry import driver_for

    uri = args.connect or DEFAULT_URI
    vault = open_vault(args)
    vm = VmRecord(args.name, "libvirt", args.libvirt, datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  {"connect": uri})
    inv = driver_for(vm).describe()
    vault.catalog.add_vm(vm)
    checked = verdicts(inv, args.name)
    if args.json:
        print_json({"vm": args.name, "libvirt": args.libvirt, "connect": uri, "disks": [d.to_json() for d in inv.disks],
                    "skipped": [{"name": k.name, "reason": k.reason} for k in inv.skipped],
                    "verdicts": [v.to_json() for v in checked.verdicts]})
        return 0
    print(f"protecting libvirt domain {args.libvirt!r} at {uri} as VM {args.name!r}")
    print(disk_rows(inv, checked))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    vault = open_vault(args)
    vms = vault.catalog.vms()
    if args.json:
        print_json([{"name": v.name, "kind": v.kind, "address": v.address, "added": v.added,
                     "points": len(vault.catalog.points(v.name)), "policy": v.settings.get("policy")} for v in vms])
        return 0
    print(table(["vm", "kind", "address", "points"],
                [[v.name, v.kind, v.address, len(vault.catalog.points(v.name))] for v in vms]))
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    from ..policy.store import PolicyStore, assign
    vault = open_vault(args)
    drilled = _set_drill(vault, args)
    if (set_consistency(vault, args) or drilled) and args.policy is None:
        return 0
    if args.policy is None:
        raise UsageError("nothing to set: give --policy, --consistency, --pre-script, --post-script, "
                         "--exclude-disk, --include-disk, --agent-socket, --freeze-timeout or --drill-*")
    policy = None if args.policy.lower() == "none" else args.policy
    assign(vault.catalog, PolicyStore(vault.catalog.path), args.name, policy)
    print(f"VM {args.name!r} " + (f"follows policy {policy!r}" if policy else "has no policy: not scheduled"))
    return 0


def _set_drill(vault: Vault, args: argparse.Namespace) -> bool:
    """The VM's drill settings (``settings['drill']``); True when any was given."""
    import re
    import shlex
    if args.drill_console is None and args.drill_command is None and args.drill_timeout is None:
        return False
    rec = vault.catalog.vm(args.name)
    d = dict(rec.settings.get("drill") or {})
    if args.drill_console is not None:
        try:
            re.compile(args.drill_console)
        except re.error as exc:
            raise UsageError(f"--drill-console {args.drill_console!r} is not a regular expression: {exc}") from exc
        d["console"] = args.drill_console
    if args.drill_command is not None:
        try:
            d["command"] = shlex.split(args.drill_command)
        except ValueError as exc:
            raise UsageError(f"--drill-command {args.drill_command!r}: {exc}") from exc
    if args.drill_timeout is not None:
        if args.drill_timeout <= 0:
            raise UsageError("--drill-timeout must be positive")
        d["timeout"] = args.drill_timeout
    vault.catalog.update_vm(args.name, settings=dict(rec.settings, drill=d))
    print(f"VM {args.name!r}: drill settings {d}")
    return True


def cmd_cleanup(args: argparse.Namespace) -> int:
    """The sweep every backup starts with, on demand: after a killed backup, without waiting for the next one.
    Bitmaps stay: the next backup merges them, so the chain still covers everything since the last point."""
    from ..drivers.registry import driver_for
    from ..paths import work_home
    vault = open_vault(args, create=False)
    vm = vault.catalog.vm(args.name)
    with vault.vm_lock(args.name, writer=False):         # never while a backup of this VM runs
        with driver_for(vm).session() as s:
            removed = s.sweep(work_home())
    removed += _sweep_drills()
    if args.json:
        print_json({"vm": args.name, "removed": removed})
    else:
        print(f"VM {args.name!r}: " + (f"removed {', '.join(removed)}" if removed else "nothing left behind"))
    return 0


def _sweep_drills() -> list[str]:
    """What a killed restore drill left on this host (none while a drill runs: it holds the host's drill lock)."""
    from ..errors import LockedError
    from ..restore import drillstate
    if not drillstate.present():
        return []
    try:
        with drillstate.host_lock():
            return drillstate.sweep()
    except LockedError:
        return []


def cmd_remove(args: argparse.Namespace) -> int:
    vault = open_vault(args)
    vault.catalog.remove_vm(args.name)
    print(f"VM {args.name!r} is no longer protected; its points stay in the vault")
    return 0
