"""``cutpoint drill VM [POINT]``: boot a point beside production and check its filesystems; the verdict is kept.

The VM's configured drill settings (``vm set --drill-console/--drill-command``) apply; ``--console`` overrides the
pattern for one run. A failed drill prints its result too, raises an alert (a log line, and the webhook of
``$CUTPOINT_WEBHOOK`` when set) and exits 13.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from ..errors import DrillFailedError
from ..restore.drillvm import DEFAULT_TIMEOUT
from ..workdir import private_dir
from .common import add_vault_arg, open_vault, print_json

if TYPE_CHECKING:
    from ..restore.drill import DrillResult


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("drill", help="restore drill: boot a point isolated beside production, check every "
                       "filesystem, keep the verdict with the point")
    p.add_argument("name", help="the protected VM")
    p.add_argument("point", nargs="?", default="latest", help="point id, unique prefix or 'latest' (default)")
    p.add_argument("--console", metavar="PATTERN", default=None,
                   help="regular expression the serial console must show (overrides the VM's; default: a login "
                        "prompt or a systemd multi-user/graphical target)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help=f"time allowed for every signal (default: the VM's, else {DEFAULT_TIMEOUT:g})")
    p.add_argument("--json", action="store_true")
    add_vault_arg(p)
    p.set_defaults(func=cmd_drill)


def cmd_drill(args: argparse.Namespace) -> int:
    from ..jobs.alerts import Alerter
    from ..jobs.record import recorded
    from ..restore.drill import options_for
    from ..restore.orchestrator import drill

    vault = open_vault(args)
    opts = options_for(vault.catalog.vm(args.name).settings, console=args.console, timeout=args.timeout,
                       evidence=private_dir("screens"), key_file=args.key_file)
    with recorded(vault, "drill", args.name, detail={"point": args.point}) as job:
        res = drill(vault, args.name, args.point, opts)
        job.done(point=res.point, detail={"verdict": res.verdict, "rto_s": res.rto_s, "reasons": res.reasons})
        if args.json:
            print_json(res.to_json())
        else:
            _print(res)
        if res.verdict != "passed":
            alerter = Alerter(os.environ.get("CUTPOINT_WEBHOOK") or None)
            alerter.drill_failed(res.vm, res.point, res.reasons)
            alerter.flush()
            raise DrillFailedError(f"drill of point {res.point} of VM {res.vm!r} failed: {'; '.join(res.reasons)}")
    return 0


def _print(res: DrillResult) -> None:
    print(f"drill of {res.vm} point {res.point} (as {res.drill_vm}): {res.verdict}"
          + (f", RTO {res.rto_s:.1f} s" if res.rto_s is not None else ""))
    for s in res.signals:
        at = f"{s.at_s:.1f} s" if s.at_s is not None else "-"
        print(f"  signal {s.name:<8} {'ok' if s.ok else 'MISSING':<8} {at}" + (f"  {s.detail}" if s.detail else ""))
    for f in res.filesystems:
        print(f"  fs {f.where()} {f.fstype or '?'}: {f.verdict}" + (f"  {f.detail}" if f.detail else ""))
    if res.screendump:
        print(f"  screendump {res.screendump['png']}")
    for r in res.reasons:
        print(f"  reason: {r}")
