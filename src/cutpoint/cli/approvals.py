"""Multi-user authorization: ``vault guard init``, ``vault delete``, ``approvals``, ``approve`` and ``deny``.

The operator's commands (``vault protect`` lowering, an early ``delete``, ``vault delete``) stop with a request id in
a guarded vault; the guard, holding the guard key and nothing else (no vault key, no passphrase), lists and decides
requests with ``approvals``, ``approve`` and ``deny``; the operator then re-runs with ``--request ID``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError
from ..paths import default_vault
from ..vault import guard, location
from .common import add_vault_arg, open_vault, print_json, table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    a = sub.add_parser("approvals", help="list the requests that wait for (or had) the vault guard's approval")
    a.add_argument("--audit", action="store_true", help="show the audit log instead: every request, approval, "
                   "denial, use and refusal")
    a.add_argument("--json", action="store_true")
    add_vault_arg(a)
    a.set_defaults(func=cmd_approvals)
    for name, verb in (("approve", "approve"), ("deny", "deny")):
        d = sub.add_parser(name, help=f"{verb} a request with the vault's guard key (the second principal)")
        d.add_argument("request", metavar="REQUEST", help="its id ('cutpoint approvals' lists them)")
        d.add_argument("--guard-key", type=Path, required=True, metavar="FILE", help="the guard key file")
        d.add_argument("--json", action="store_true")
        add_vault_arg(d)
        d.set_defaults(func=cmd_decide, decision="approved" if name == "approve" else "denied")


def register_vault(vs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``vault guard init`` and ``vault delete`` (called by ``cli/vault.py``)."""
    g = vs.add_parser("guard", help="multi-user authorization: a second principal's key that must approve reducing "
                      "protection, early deletes and deleting the vault")
    gs = g.add_subparsers(dest="guard_command", metavar="ACTION")
    gs.required = True
    i = gs.add_parser("init", help="make a guard key: its public half goes into the vault's config, the secret only "
                      "to FILE (0600), for someone other than the operator; before the vault is made immutable (an "
                      "unguarded immutable vault cannot be given a guard)")
    i.add_argument("--to", type=Path, required=True, metavar="FILE")
    i.add_argument("--request", default=None, metavar="ID", help="a guarded vault: the guard's approval of "
                   "replacing it")
    i.add_argument("--json", action="store_true")
    add_vault_arg(i)
    i.set_defaults(func=cmd_guard_init)

    d = vs.add_parser("delete", help="delete the vault: every point and object in it (the guard's requests and "
                      "audit log stay); needs --confirm ID, and the guard's approval in a guarded vault")
    d.add_argument("--confirm", default=None, metavar="ID", help="the vault's id ('cutpoint vault info')")
    d.add_argument("--request", default=None, metavar="ID", help="a guarded vault: the approved request")
    d.add_argument("--json", action="store_true")
    add_vault_arg(d)
    d.set_defaults(func=cmd_vault_delete)


def _root(args: argparse.Namespace) -> Path:
    return Path(args.vault or default_vault()).expanduser()


def cmd_guard_init(args: argparse.Namespace) -> int:
    from ..vault import approvals, protection

    to = args.to.expanduser()
    if to.exists() or to.is_symlink():
        raise UsageError(f"{to} already exists; choose another --to FILE (a guard key is never overwritten); "
                         "nothing was changed")
    vault = open_vault(args, write="setting the vault's guard")
    try:
        key = guard.generate(str(vault.config["id"]))
        with vault.points_lock(shared=False), vault.gc_lock():
            config = protection.current_config(vault)
            old = guard.of(config)
            if old is not None:
                approvals.authorize(vault, config, approvals.Operation("guard-replace", {"guard": old.fingerprint}),
                                    args.request)
            else:
                guard.check_can_add(config, vault.where, guard.holds_points(vault))   # exit 12 if it may not
            guard.write_key_file(key, to)     # the secret first: a config naming a key nobody holds is worse
            guard.install(vault, key)
    finally:
        vault.close()
    if args.json:
        print_json({"vault": location.describe(vault.root), "guard": key.guard.to_config(), "key_file": str(to)})
    else:
        print(f"vault {location.describe(vault.root)} is guarded by key {key.guard.fingerprint}; its secret is in "
              f"{to} (0600): give it to the second principal and remove it from this host. From now on reducing "
              "protection, early deletes and deleting the vault need their approval ('cutpoint approve')")
    return 0


def cmd_vault_delete(args: argparse.Namespace) -> int:
    from ..vault.vaultdelete import delete_vault

    vault = open_vault(args, write="deleting the vault")
    try:
        res = delete_vault(vault, args.confirm, args.request)
    finally:
        vault.close()
    if args.json:
        print_json(res.to_json())
    else:
        print(f"deleted vault {res.vault} ({res.id}): {res.objects} object(s)"
              + (f"; its guard's requests and audit log ({res.kept} object(s)) stay" if res.kept else ""))
    return 0


def cmd_approvals(args: argparse.Namespace) -> int:
    from ..vault import approvals, audit

    backend, config = approvals.unopened(_root(args))
    if args.audit:
        events = audit.events(backend)
        if args.json:
            print_json([e.to_json() for e in events])
        else:
            print(table(["time", "event", "request", "by", "what"],
                        [[audit.iso(e.time), e.event, e.request, e.by, e.what] for e in events]))
        return 0
    found = approvals.listing(backend, str(config["id"]), guard.of(config), audit.now())
    if args.json:
        print_json([s.to_json() for s in found])
        return 0
    if guard.of(config) is None and not found:
        print(f"vault {location.describe(_root(args))} has no guard: nothing needs approval")
        return 0
    print(table(["request", "state", "what", "requested by", "created", "expires"],
                [[s.id, s.state, s.request.operation.describe() if s.request else s.problem,
                  s.request.requested_by if s.request else "", audit.iso(s.request.created) if s.request else "",
                  audit.iso(s.request.expires) if s.request else ""] for s in found]))
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    from ..vault import approvals, audit

    root = _root(args)
    key = guard.load_key_file(args.guard_key.expanduser())
    backend, config = approvals.unopened(root)
    req = approvals.decide(backend, config, key, args.guard_key, args.request, args.decision)
    # what was signed, whole: the operation and its parameters (the request's id is the digest of its content)
    if args.json:
        print_json({"request": req.id, "decision": args.decision, "what": req.operation.describe(),
                    "operation": req.operation.kind, "params": req.operation.params, "vault": req.vault,
                    "requested_by": req.requested_by, "created": audit.iso(req.created),
                    "expires": audit.iso(req.expires)})
    else:
        print(f"{args.decision} request {req.id} ({req.operation.describe()}, requested by {req.requested_by} at "
              f"{audit.iso(req.created)})"
              + (f"; the operator runs it with --request {req.id} before {audit.iso(req.expires)}"
                 if args.decision == "approved" else ""))
    return 0
