"""``cutpoint policy``: create, show, list and delete backup policies (from flags or YAML/JSON files)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..units import human
from ..errors import UsageError
from ..vault.retention import RETENTION_KEYS
from .common import add_vault_arg, open_vault, print_json, table

if TYPE_CHECKING:
    from ..policy.model import Policy, Schedule


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("policy", help="backup policies: schedule, retention, consistency, time zone")
    ps = p.add_subparsers(dest="policy_command", metavar="ACTION")
    ps.required = True

    c = ps.add_parser("create", help="create a policy from options or a YAML/JSON file",
                      description="Schedules: --daily HH:MM | --weekly DAYS --at HH:MM | --hourly 4|6|8|12 "
                      "[--window-start HH:MM --window-hours N]. Retention: --keep-last/daily/weekly/monthly/yearly "
                      "N (-1 = all). Times are in --timezone (default UTC).")
    c.add_argument("name", nargs="?", help="policy name (default: the file's 'name')")
    c.add_argument("--file", type=Path, help="YAML or JSON policy file")
    c.add_argument("--replace", action="store_true", help="replace an existing policy of that name")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--daily", metavar="HH:MM", help="back up every day at this time")
    g.add_argument("--weekly", metavar="DAYS", help="back up on these days (e.g. sun,wed) at --at")
    g.add_argument("--hourly", type=int, metavar="HOURS", help="back up every 4, 6, 8 or 12 hours in the window")
    g.add_argument("--every-seconds", type=int, help=argparse.SUPPRESS)   # tests only (CUTPOINT_TEST_SCHEDULES=1)
    c.add_argument("--at", metavar="HH:MM", help="time of day of a weekly backup")
    c.add_argument("--window-start", metavar="HH:MM", help="hourly: when the daily window opens (default 00:00)")
    c.add_argument("--window-hours", type=int, help="hourly: how long the window lasts (default 24)")
    for k in RETENTION_KEYS:
        c.add_argument(f"--keep-{k}", type=int, metavar="N", help=f"keep the newest point of N {k} buckets"
                       if k != "last" else "keep the N newest points")
    c.add_argument("--consistency", choices=("app", "crash"),
                   help="consistency of scheduled backups (default: each VM's own setting, else crash)")
    c.add_argument("--timezone", help="IANA time zone of the schedule and of retention days (default UTC)")
    c.add_argument("--rpo-grace", type=int, metavar="MINUTES",
                   help="alert when a VM has had no successful backup for the schedule's interval plus this "
                        "(default 60)")
    v = c.add_mutually_exclusive_group()
    v.add_argument("--verify-daily", metavar="HH:MM", help="verify the VMs' points every day at this time")
    v.add_argument("--verify-weekly", metavar="DAYS", help="verify the VMs' points on these days at --verify-at")
    c.add_argument("--verify-at", metavar="HH:MM", help="time of day of a weekly verify")
    c.add_argument("--verify-structure", action="store_true",
                   help="scheduled verify checks structure only (default: --read-data, every chunk read)")
    c.add_argument("--copy-to", metavar="VAULT", help="copy the VMs' points into VAULT (made with 'vault init VAULT "
                   "--copy-of ...') after each successful backup, or at --copy-daily")
    c.add_argument("--copy-daily", metavar="HH:MM", help="copy once a day at this time instead")
    c.add_argument("--copy-limit-rate", metavar="RATE", help="at most RATE bytes per second to the copy (e.g. 20M)")
    c.add_argument("--json", action="store_true")
    add_vault_arg(c)
    c.set_defaults(func=cmd_create)

    s = ps.add_parser("show", help="show a policy, the VMs using it and its next runs")
    s.add_argument("name")
    fmt = s.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--yaml", action="store_true", help="print as a YAML file 'policy create --file' reads")
    s.add_argument("--next", type=int, default=5, metavar="N", help="how many upcoming runs to list (default 5)")
    add_vault_arg(s)
    s.set_defaults(func=cmd_show)

    ls = ps.add_parser("list", help="list policies")
    ls.add_argument("--json", action="store_true")
    add_vault_arg(ls)
    ls.set_defaults(func=cmd_list)

    d = ps.add_parser("delete", help="delete a policy no VM uses")
    d.add_argument("name")
    add_vault_arg(d)
    d.set_defaults(func=cmd_delete)


def _from_flags(args: argparse.Namespace) -> dict[str, Any]:
    if not args.name:
        raise UsageError("policy create needs a NAME (or --file with a 'name')")
    sched: dict[str, Any]
    if args.daily:
        sched = {"frequency": "daily", "time": args.daily}
    elif args.weekly:
        sched = {"frequency": "weekly", "days": args.weekly, "time": args.at}
    elif args.hourly is not None:
        sched = {"frequency": "hourly", "every": args.hourly}
        if args.window_start:
            sched["window_start"] = args.window_start
        if args.window_hours is not None:
            sched["window_hours"] = args.window_hours
    elif args.every_seconds is not None:
        sched = {"frequency": "seconds", "every": args.every_seconds}
    else:
        raise UsageError("policy create needs a schedule: --daily HH:MM, --weekly DAYS --at HH:MM or --hourly N "
                         "(or --file)")
    if args.at and not args.weekly:
        raise UsageError("--at goes with --weekly; a daily time is --daily HH:MM")
    if (args.window_start or args.window_hours is not None) and args.hourly is None:
        raise UsageError("--window-start/--window-hours go with --hourly")
    data: dict[str, Any] = {"name": args.name, "schedule": sched}
    keep = {k: getattr(args, f"keep_{k}") for k in RETENTION_KEYS if getattr(args, f"keep_{k}") is not None}
    if keep:
        data["retention"] = keep
    if args.consistency:
        data["consistency"] = args.consistency
    if args.timezone:
        data["timezone"] = args.timezone
    if args.rpo_grace is not None:
        data["rpo_grace_minutes"] = args.rpo_grace
    verify = _verify_flags(args)
    if verify is not None:
        data["verify"] = verify
    if (args.copy_daily or args.copy_limit_rate) and not args.copy_to:
        raise UsageError("--copy-daily and --copy-limit-rate go with --copy-to VAULT")
    if args.copy_to:
        data["copy"] = {"to": args.copy_to, **({"frequency": "daily", "time": args.copy_daily} if args.copy_daily
                                               else {"after_backup": True}),
                        **({"limit_rate": args.copy_limit_rate} if args.copy_limit_rate else {})}
    return data


def _verify_flags(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.verify_at and not args.verify_weekly:
        raise UsageError("--verify-at goes with --verify-weekly; a daily verify is --verify-daily HH:MM")
    if args.verify_daily:
        v: dict[str, Any] = {"frequency": "daily", "time": args.verify_daily}
    elif args.verify_weekly:
        v = {"frequency": "weekly", "days": args.verify_weekly, "time": args.verify_at}
    elif args.verify_structure:
        raise UsageError("--verify-structure needs a verify schedule: --verify-daily HH:MM or --verify-weekly DAYS "
                         "--verify-at HH:MM")
    else:
        return None
    return {**v, "read_data": not args.verify_structure}


def cmd_create(args: argparse.Namespace) -> int:
    from ..policy import files
    from ..policy.model import Policy
    from ..policy.store import PolicyStore

    if args.file:
        flags = [f for f in ("daily", "weekly", "hourly", "every_seconds", "at", "window_start", "window_hours",
                             "consistency", "timezone", "rpo_grace", "verify_daily", "verify_weekly", "verify_at",
                             "copy_to", "copy_daily", "copy_limit_rate",
                             *(f"keep_{k}" for k in RETENTION_KEYS))
                 if getattr(args, f) is not None] + (["verify_structure"] if args.verify_structure else [])
        if flags:
            raise UsageError(f"--file and --{flags[0].replace('_', '-')} do not mix: put everything in the file")
        policy = files.load(args.file, args.name)
    else:
        policy = Policy.from_dict(_from_flags(args))
    vault = open_vault(args)
    created = PolicyStore(vault.catalog.path).put(policy, replace=args.replace)
    if args.json:
        print_json(policy.to_dict())
    else:
        print(f"policy {policy.name!r} {'created' if created else 'replaced'}: {describe(policy)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ..policy import files
    from ..policy.schedule import upcoming
    from ..policy.store import PolicyStore

    vault = open_vault(args)
    policy = PolicyStore(vault.catalog.path).get(args.name)
    if args.yaml:
        sys.stdout.write(files.dumps(policy, "yaml"))
        return 0
    users = [v.name for v in vault.catalog.vms() if v.settings.get("policy") == policy.name]
    runs = upcoming(policy, datetime.now(timezone.utc), max(0, args.next))
    if args.json:
        print_json({**policy.to_dict(), "vms": users,
                    "next_runs": [t.isoformat().replace("+00:00", "Z") for t in runs]})
        return 0
    print(f"policy {policy.name}: {describe(policy)}")
    print(f"VMs: {', '.join(users) or 'none'}")
    for t in runs:
        print(f"  next: {t.astimezone(policy.tz):%Y-%m-%d %H:%M %Z}  ({t:%Y-%m-%d %H:%M} UTC)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ..policy.store import PolicyStore

    vault = open_vault(args)
    policies = PolicyStore(vault.catalog.path).all()
    if args.json:
        print_json([p.to_dict() for p in policies])
        return 0
    users: dict[str, list[str]] = {}
    for v in vault.catalog.vms():
        if v.settings.get("policy"):
            users.setdefault(v.settings["policy"], []).append(v.name)
    print(table(["policy", "schedule", "retention", "zone", "VMs"],
                [[p.name, _sched(p), _keep(p), p.timezone, ", ".join(users.get(p.name, [])) or "-"]
                 for p in policies]))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from ..policy.store import PolicyStore

    vault = open_vault(args)
    PolicyStore(vault.catalog.path).delete(args.name, vault.catalog)
    print(f"policy {args.name!r} deleted")
    return 0


def _sched(p: Policy) -> str:
    return _sched_text(p.schedule)


def _sched_text(s: Schedule) -> str:
    if s.frequency == "daily":
        return f"daily at {s.time}"
    if s.frequency == "weekly":
        return f"weekly on {','.join(s.days)} at {s.time}"
    if s.frequency == "hourly":
        return f"every {s.every} h from {s.window_start} for {s.window_hours} h"
    return f"every {s.every} s (test)"


def _keep(p: Policy) -> str:
    r = p.retention.to_dict()
    return ", ".join(f"{k} {'all' if v < 0 else v}" for k, v in r.items() if v) or "-"


def describe(p: Policy) -> str:
    cons = f"{p.consistency}-consistent" if p.consistency else "consistency as set per VM"
    extra = ""
    if p.verify is not None:
        extra += f", verify {_sched_text(p.verify.schedule)} ({'read data' if p.verify.read_data else 'structure'})"
    if p.rpo_grace_minutes is not None:
        extra += f", RPO grace {p.rpo_grace_minutes} min"
    if p.copy is not None:
        extra += (f", copied to {p.copy.to} "
                  + (_sched_text(p.copy.schedule) if p.copy.schedule is not None else "after each backup")
                  + (f" at most {human(p.copy.limit_rate)}/s" if p.copy.limit_rate else ""))
    return f"{_sched(p)} ({p.timezone}), keep {_keep(p)}, {cons}{extra}"
