"""``cutpoint prune``: forget a VM's points that a --keep-* policy does not keep (then ``cutpoint gc`` frees space)."""

from __future__ import annotations

import argparse

from .common import add_vault_arg, open_vault, print_json, table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("prune", help="remove a VM's points not kept by a retention policy (restic semantics)")
    p.add_argument("name", help="the VM")
    for rule, what in (("last", "the N newest points"), ("daily", "the newest point of each of the last N days"),
                       ("weekly", "... of the last N ISO weeks"), ("monthly", "... of the last N months"),
                       ("yearly", "... of the last N years")):
        p.add_argument(f"--keep-{rule}", type=int, default=0, metavar="N", help=f"keep {what} (-1: all)")
    p.add_argument("--dry-run", action="store_true", help="only show what would be kept and removed")
    p.add_argument("--json", action="store_true")
    add_vault_arg(p)
    p.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> int:
    from ..jobs.record import recorded
    from ..vault.prune import prune
    from ..vault.retention import Retention

    vault = open_vault(args, write=None if args.dry_run else f"prune of VM {args.name!r}")
    policy = Retention(args.keep_last, args.keep_daily, args.keep_weekly, args.keep_monthly, args.keep_yearly)
    with recorded(vault, "prune", args.name, detail={"dry_run": args.dry_run}) as job:
        res = prune(vault, args.name, policy, dry_run=args.dry_run)
        job.done(detail={"removed": [d.id for d in res.decisions if not d.keep], "dry_run": args.dry_run})
    if args.json:
        print_json(res.to_json())
        return 0
    print(f"prune VM {args.name!r} ({policy.describe()}){': dry run, nothing removed' if args.dry_run else ''}")
    if res.decisions:
        print(table(["action", "point", "created", "why"],
                    [["keep" if d.keep else ("would remove" if args.dry_run else "remove"), d.id,
                      d.created.strftime("%Y-%m-%d %H:%M:%S"), ", ".join(d.reasons) or "no rule keeps it"]
                     for d in res.decisions]))
    gone = sum(not d.keep for d in res.decisions)
    soft = res.protection.soft_delete_days
    print(f"{len(res.decisions) - gone} kept, {gone} {'to remove' if args.dry_run else 'removed'}"
          + (f"; recoverable {soft} days ('cutpoint points --deleted', 'cutpoint undelete POINT')" if gone and soft
             else "; run 'cutpoint gc' to free their space" if gone and not args.dry_run else ""))
    if res.immutable:
        print(f"immutability kept {len(res.immutable)} point(s) younger than {res.protection.immutable_days} days "
              f"that the policy would remove: {', '.join(res.immutable)}")
    return 0
