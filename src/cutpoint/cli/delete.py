"""``cutpoint delete POINT`` and ``cutpoint undelete POINT``: remove one point (soft, in a vault with soft delete;
refused while the vault's immutability protects it) and bring a soft-deleted one back."""

from __future__ import annotations

import argparse

from .common import add_vault_arg, open_vault, print_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = sub.add_parser("delete", help="delete one restore point (recoverable with 'undelete' while the vault's soft "
                       "delete lasts; refused before its immutability ends)")
    d.add_argument("point", metavar="POINT", help="its id, or a unique prefix of it (see 'cutpoint points')")
    d.add_argument("--request", default=None, metavar="ID", help="a guarded vault: the request its guard approved "
                   "for deleting this point before its immutability ends")
    d.add_argument("--json", action="store_true")
    add_vault_arg(d)
    d.set_defaults(func=cmd_delete)

    u = sub.add_parser("undelete", help="bring back a soft-deleted point (see 'cutpoint points --deleted')")
    u.add_argument("point", metavar="POINT", help="its id, or a unique prefix of it")
    u.add_argument("--json", action="store_true")
    add_vault_arg(u)
    u.set_defaults(func=cmd_undelete)


def cmd_delete(args: argparse.Namespace) -> int:
    from ..vault.delete import delete_point

    vault = open_vault(args, write=f"deleting point {args.point!r}")
    res = delete_point(vault, args.point, args.request)
    if args.json:
        print_json(res.to_json())
    elif res.soft and res.recoverable_until is not None:
        print(f"deleted point {res.point} of VM {res.vm!r}: recoverable with 'cutpoint undelete {res.point}' until "
              f"{res.recoverable_until:%Y-%m-%d %H:%M}Z; then gc frees its space")
    else:
        print(f"deleted point {res.point} of VM {res.vm!r} (the vault keeps no soft-deleted points); run "
              "'cutpoint gc' to free its space")
    return 0


def cmd_undelete(args: argparse.Namespace) -> int:
    from ..vault.delete import undelete_point

    vault = open_vault(args, write=f"undeleting point {args.point!r}")
    rec = undelete_point(vault, args.point)
    if args.json:
        print_json({"point": rec.id, "vm": rec.vm, "created": rec.created})
    else:
        print(f"point {rec.id} of VM {rec.vm!r} is back: 'cutpoint points {rec.vm}' lists it")
    return 0
