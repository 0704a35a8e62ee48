"""``cutpoint verify``: check that points are whole and authentic (and with --read-data, every chunk's content)."""

from __future__ import annotations

import argparse

from typing import TYPE_CHECKING

from ..errors import IntegrityError
from ..units import human
from .common import add_vault_arg, open_vault, print_json

if TYPE_CHECKING:
    from ..vault.verify import VerifyReport


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("verify", help="check points: structure, or with --read-data every chunk's content")
    p.add_argument("target", nargs="?", metavar="NAME|POINT", help="a VM's points, or one point (default: all)")
    p.add_argument("--read-data", action="store_true", help="read, decrypt, decompress and hash every chunk once")
    p.add_argument("--json", action="store_true")
    add_vault_arg(p)
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from ..jobs.record import recorded
    from ..vault.verify import verify

    vault = open_vault(args, create=False)
    with recorded(vault, "verify", None, detail={"target": args.target, "read_data": args.read_data}) as job:
        rep = verify(vault, args.target, read_data=args.read_data)
        if args.json:
            print_json(rep.to_json())
        else:
            _print(rep)
        if not rep.ok:
            failed = [p.point for p in rep.points if p.state != "ok"]
            what = f"{len(failed)} of {len(rep.points)} points failed ({', '.join(failed[:4])}" \
                   f"{', ...' if len(failed) > 4 else ''})" if failed else "the catalog is damaged"
            raise IntegrityError(f"verify: {what}; restore from a point that verifies and take a --full backup "
                                 "(the next backup of an affected VM is full by itself)")
        job.done(nbytes=rep.bytes_read, detail={"points": len(rep.points), "chunks": rep.chunks_checked})
    return 0


def _print(rep: VerifyReport) -> None:
    ok = sum(p.state == "ok" for p in rep.points)
    print(f"verify ({rep.level}) of {len(rep.points)} points: {ok} ok, {len(rep.points) - ok} failed; "
          f"{rep.chunks_checked} chunks checked" + (f", {human(rep.bytes_read)} read" if rep.level == "data" else ""))
    for c in rep.catalog_problems:
        print(f"catalog: {c}")
    for p in rep.points:
        print(f"{'ok' if p.state == 'ok' else 'FAILED':6}  {p.point}  {p.vm}"
              + (": " + "; ".join(p.problems[:3]) if p.problems else ""))
    for d in rep.damaged_chunks:
        where = ", ".join(f"point {a['point']} disk {a['disk']}" for a in d.affects[:6])
        print(f"chunk {d.id} {d.problem}{' (moved aside)' if d.moved_aside else ''}: affects {where}"
              + (", ..." if len(d.affects) > 6 else ""))
