"""``cutpoint report``: per VM, the billing weight of its consistency type and the vault bytes it uses.

Computed by ``service/report.py: usage`` (which says what the numbers mean); this module only shows it.
"""

from __future__ import annotations

import argparse

from ..units import human
from .common import add_vault_arg, open_vault, print_json, table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("report", help="per VM: protected-instance weight (consistency type) and vault bytes")
    p.add_argument("--json", action="store_true")
    p.add_argument("--drills", action="store_true", help="instead: every point's last restore drill (verdict, RTO)")
    add_vault_arg(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    if args.drills:
        return _drills(args)
    from ..service.report import usage

    res = usage(open_vault(args, create=False))
    if args.json:
        print_json(res.to_json())
        return 0
    print(table(["vm", "consistency", "weight", "points", "last point", "logical", "stored", "unique"],
                [[v.vm + ("" if v.protected else " (removed)"), v.consistency, f"{v.weight:.1f}",
                  v.points, v.last_point_consistency or "-", human(v.logical_bytes),
                  human(v.stored_bytes), human(v.unique_bytes)] for v in res.vms]))
    print(f"protected instances: {res.total_weight:.1f} (crash-consistent 0.5, app-consistent 1.0); "
          f"vault chunks: {human(res.vault_stored_bytes)}")
    for p in res.problems:
        print(f"warning: {p}")
    return 0


def _drills(args: argparse.Namespace) -> int:
    from ..service.report import drills

    rows = drills(open_vault(args, create=False))
    if args.json:
        print_json([r.to_json() for r in rows])
        return 0
    print(table(["vm", "point", "drill", "rto", "checked", "reasons"],
                [[r.vm, r.point, r.verdict, f"{r.rto_s:.1f} s" if r.rto_s is not None else "-", r.checked,
                  "; ".join(r.reasons)[:100] or "-"] for r in rows]))
    return 0
