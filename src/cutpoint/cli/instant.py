"""``cutpoint instant status|finish``: follow and complete an instant restore (``restore --instant``)."""

from __future__ import annotations

import argparse

from ..units import human
from .common import add_vault_arg, open_vault, print_json
from .progress import ProgressLine


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("instant", help="status and finish of instant restores")
    s = p.add_subparsers(dest="instant_command", metavar="ACTION")
    s.required = True
    st = s.add_parser("status", help="how far the data has moved to local disks")
    st.add_argument("name", help="the instant-restored VM")
    st.add_argument("--json", action="store_true")
    add_vault_arg(st)
    st.set_defaults(func=cmd_status)
    fi = s.add_parser("finish", help="wait for the data to be local, then drop the link to the vault")
    fi.add_argument("name", help="the instant-restored VM")
    fi.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for streaming (default 3600)")
    fi.add_argument("--json", action="store_true")
    add_vault_arg(fi)
    fi.set_defaults(func=cmd_finish)


def cmd_status(args: argparse.Namespace) -> int:
    from ..restore.instant import status

    res = status(open_vault(args, create=False), args.name)
    if args.json:
        print_json(res)
        return 0
    line = f"{res['vm']}: {res['state']}"
    if "bytes_total" in res:
        line += f", {human(res['bytes_done'])} of {human(res['bytes_total'])} streamed"
    print(line + f"; NBD server {'running' if res['server_running'] else 'gone'} (pid {res['server_pid']})")
    return 0


def cmd_finish(args: argparse.Namespace) -> int:
    from ..jobs.record import recorded
    from ..restore.instant import finish
    from ..restore.results import job_detail

    vault = open_vault(args, create=False)
    with recorded(vault, "restore", args.name, detail={"mode": "instant-finish"}) as job, \
            ProgressLine(not args.json) as bar:
        res = finish(vault, args.name, progress=bar, timeout=args.timeout)
        job.done(nbytes=int(res.get("bytes") or 0), detail=job_detail(res))
    if args.json:
        print_json(res)
    else:
        print(f"{res['vm']}: all data is local; the NBD server is stopped; the VM no longer uses the vault")
    return 0
