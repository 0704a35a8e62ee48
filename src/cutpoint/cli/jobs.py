"""``cutpoint jobs``: what the service (and CLI backups) did: state, times, bytes, errors."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

from ..jobs.store import KINDS, STATES, JobStore
from ..units import human
from .common import add_vault_arg, open_vault, print_json, table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("jobs", help="list backup, restore, prune, verify and gc jobs")
    p.add_argument("id", nargs="?", type=int, help="show one job in full")
    p.add_argument("--vm", help="only this VM's jobs")
    p.add_argument("--state", choices=STATES)
    p.add_argument("--kind", choices=KINDS)
    p.add_argument("--limit", type=int, default=50, help="most recent N (default 50)")
    p.add_argument("--json", action="store_true")
    add_vault_arg(p)
    p.set_defaults(func=cmd_jobs)


def cmd_jobs(args: argparse.Namespace) -> int:
    vault = open_vault(args)
    store = JobStore(vault.catalog.path)
    store.reap(datetime.now(timezone.utc))
    if args.id is not None:
        job = store.get(args.id)
        if args.json:
            print_json(job.to_json())
        else:
            for k, v in job.to_json().items():
                print(f"{k:11} {v}")
        return 0
    jobs = store.list(vm=args.vm, state=args.state, kind=args.kind, limit=max(1, args.limit))
    if args.json:
        print_json([j.to_json() for j in jobs])
        return 0
    print(table(["id", "kind", "vm", "state", "trigger", "started", "duration", "bytes", "point / error"],
                [[j.id, j.kind, j.vm or "-", j.state, j.trigger, j.started,
                  f"{j.duration_s:.1f} s" if j.duration_s is not None else "-", human(j.bytes),
                  (j.error or "")[:70] if j.state != "succeeded" else (j.point or "")] for j in jobs]))
    return 0
