"""``cutpoint gc``: delete chunks no point references (safe while backups run) and report the space freed."""

from __future__ import annotations

import argparse

from ..errors import UsageError
from ..units import human
from ..vault.locks import DEFAULT_GRACE
from .common import add_vault_arg, open_vault, print_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("gc", help="free the space of chunks no point references (safe while backups run)")
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    p.add_argument("--grace", type=float, default=DEFAULT_GRACE, metavar="SECONDS",
                   help=f"also keep unreferenced files touched this long before the cutoff (default "
                        f"{DEFAULT_GRACE:.0f}; covers clock steps)")
    p.add_argument("--json", action="store_true")
    add_vault_arg(p)
    p.set_defaults(func=cmd_gc)


def cmd_gc(args: argparse.Namespace) -> int:
    from ..vault.gc import gc

    if args.grace < 0:
        raise UsageError("--grace must be 0 or more seconds")
    vault = open_vault(args, write=None if args.dry_run else "gc")
    res = gc(vault, dry_run=args.dry_run, grace=args.grace)
    if args.json:
        print_json(res.to_json())
        return 0
    verb = "would free" if args.dry_run else "freed"
    print(f"gc: {res.points} points reference {res.referenced_chunks} chunks ({res.chunks_seen} chunk files); "
          f"{'would remove' if args.dry_run else 'removed'} {res.removed_chunks} chunks, {res.removed_manifests} "
          f"orphan manifests, {res.removed_temp + res.removed_bad} leftovers: {verb} {human(res.freed_bytes)}")
    if res.packs_seen:
        print(f"packs: {res.packs_seen} seen, {res.packs_removed} {'to delete' if args.dry_run else 'deleted'}, "
              + (f"{res.packs_repacked} to repack" if args.dry_run else f"{res.packs_repacked} repacked into "
                 f"{res.packs_written} ({human(res.repacked_bytes)} copied)")
              + (f", {res.kept_relied} kept because a running backup relies on them" if res.kept_relied else "")
              + (f", {res.kept_retained} kept by the store's Object Lock until their retain-until date"
                 if res.kept_retained else ""))
    if res.packs_adopted:
        print(f"{res.packs_adopted} pack(s) no index listed hold chunks that points use (an index object was lost): "
              f"{'would take' if args.dry_run else 'took'} them back into the index instead of deleting them")
    if res.retention_extended:
        print(f"Object Lock: retention extended on {res.retention_extended} objects the points still use")
    if res.soft_deleted or res.purged:
        print(f"soft delete: kept the data of {len(res.soft_deleted)} soft-deleted point(s) (recoverable "
              f"{res.soft_delete_days} days after deletion); {'would purge' if args.dry_run else 'purged'} "
              f"{len(res.purged)} expired" + (f": {', '.join(res.purged)}" if res.purged else ""))
    if res.kept_retained_records:
        print(f"Object Lock keeps the deletion records of {len(res.kept_retained_records)} expired soft-deleted "
              f"point(s) until their retain-until date; their data is kept until then: "
              f"{', '.join(res.kept_retained_records)}")
    if res.kept_immutable:
        print(f"immutability kept {len(res.kept_immutable)} expired soft-deleted point(s) younger than "
              f"{res.immutable_days} days: {', '.join(res.kept_immutable)}")
    if res.kept_young:
        print(f"kept {res.kept_young} unreferenced chunks written or reused after the cutoff {res.cutoff}"
              + (f" (running: {', '.join(res.running_backups)})" if res.running_backups else ""))
    return 0
