"""``cutpoint points``: list the complete restore points of one VM or all (``--deleted``: the soft-deleted ones)."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING

from ..units import human
from .common import add_vault_arg, open_vault, print_json, table

if TYPE_CHECKING:
    from ..catalog.db import DrillRecord
    from ..vault.vault import Vault


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("points", help="list restore points")
    p.add_argument("name", nargs="?", help="only this VM's points")
    p.add_argument("--deleted", action="store_true", help="list soft-deleted points instead: when they were "
                   "deleted and when their soft delete expires ('cutpoint undelete POINT' brings one back)")
    p.add_argument("--json", action="store_true")
    add_vault_arg(p)
    p.set_defaults(func=cmd_points)


def cmd_points(args: argparse.Namespace) -> int:
    vault = open_vault(args)
    if args.name:
        if not vault.catalog.points(args.name):
            vault.catalog.vm(args.name)   # unknown VM: a clear error; a known one simply has no points yet
    if args.deleted:
        return _deleted(vault, args.name, args.json)
    pts = vault.catalog.points(args.name)
    drills = {p.id: vault.catalog.drill(p.id) for p in pts}
    if args.json:
        print_json([dict(p.summary, drill=(d.result if (d := drills[p.id]) else None)) for p in pts])
        return 0
    print(table(["point", "vm", "created", "consistency", "mode", "pause ms", "size", "read", "stored", "drill"],
                [[p.id, p.vm, p.created, p.consistency, p.mode, f"{p.pause_ms:.1f}", human(p.logical_bytes),
                  human(p.read_bytes), human(p.stored_bytes), _drill_cell(drills[p.id])] for p in pts]))
    return 0


def _deleted(vault: Vault, vm: str | None, as_json: bool) -> int:
    from ..vault import protection, softdelete

    prot = protection.current(vault)
    pts = softdelete.scan(vault, prot, vm)
    if as_json:
        print_json([p.to_json() for p in pts])
        return 0
    print(table(["point", "vm", "created", "deleted", "expires", "size", "note"],
                [[p.id, p.vm, p.row.created if p.row else "?", _t(p.deleted), _t(p.expires),
                  human(p.row.logical_bytes) if p.row else "?", p.problem or ""] for p in pts]))
    if not prot.soft_delete_days:
        print(f"vault {vault.where} keeps no soft-deleted points (soft delete is off)")
    return 0


def _t(t: datetime | None) -> str:
    return f"{t:%Y-%m-%d %H:%M:%S}Z" if t else "?"


def _drill_cell(d: DrillRecord | None) -> str:
    """``-`` never drilled; ``passed 12.3s`` with the RTO; ``FAILED``."""
    if d is None:
        return "-"
    if d.verdict != "passed":
        return "FAILED"
    rto = d.result.get("rto_s")
    return f"passed {rto:.1f}s" if isinstance(rto, (int, float)) else "passed"
