"""``cutpoint restore``: write a point's disks back out as image files."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..restore.images import FORMATS, restore_point
from .common import add_vault_arg, open_vault, print_json
from .progress import ProgressLine


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("restore", help="restore a point's disks to image files")
    p.add_argument("name", help="the VM")
    p.add_argument("point", help="point id, a unique prefix of it, or 'latest'")
    p.add_argument("--to", type=Path, required=True, help="directory for the images (one per disk)")
    p.add_argument("--format", choices=FORMATS, default="raw")
    p.add_argument("--json", action="store_true")
    add_vault_arg(p)
    p.set_defaults(func=cmd_restore)


def cmd_restore(args: argparse.Namespace) -> int:
    vault = open_vault(args, create=False)
    if not vault.catalog.points(args.name):
        vault.catalog.vm(args.name)        # unknown VM: says so; known VM: falls through to "no such point"
    rec = vault.catalog.point(args.name, args.point)
    manifest = vault.manifest(rec)
    files = restore_point(vault, manifest, args.to, args.format, ProgressLine(not args.json))
    if args.json:
        print_json({"point": rec.id, "files": [{"disk": f.disk, "path": str(f.path), "size": f.size}
                                               for f in files]})
        return 0
    for f in files:
        print(f"{f.disk}: {f.path} ({f.size} bytes)")
    return 0
