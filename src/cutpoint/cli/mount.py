"""``cutpoint mount`` / ``cutpoint umount``: a point's ext2/3/4 filesystem, read-only, through FUSE."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..restore.names import terminal_safe
from .common import add_vault_arg, open_vault, print_json
from .restore import point_of


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("mount", help="mount a point's filesystem read-only (ext2/3/4, through FUSE)")
    p.add_argument("name", help="the VM")
    p.add_argument("point", help="point id, a unique prefix of it, or 'latest'")
    p.add_argument("mountpoint", type=Path, help="an empty directory")
    p.add_argument("--disk", help="the disk (needed when the point has several)")
    p.add_argument("--part", type=int, help="partition number (default: the first with a supported filesystem)")
    p.add_argument("--json", action="store_true")
    add_vault_arg(p)
    p.set_defaults(func=cmd_mount)

    u = sub.add_parser("umount", help="unmount what 'cutpoint mount' mounted")
    u.add_argument("mountpoint", type=Path)
    u.add_argument("--json", action="store_true")
    u.set_defaults(func=cmd_umount)


def cmd_mount(args: argparse.Namespace) -> int:
    from ..restore.browse import mount
    from ..restore.nbdserve import export_passphrase

    vault = open_vault(args, create=False)
    export_passphrase(getattr(args, "passphrase_file", None))
    with point_of(vault, args) as m:
        res = mount(vault, m, args.disk, args.mountpoint, args.part, getattr(args, "key_file", None))
    if args.json:
        print_json(res)
    else:
        mp = terminal_safe(res["mountpoint"])
        print(f"{mp}: disk {terminal_safe(res['disk'])} of point {res['point']}, read-only; "
              f"'cutpoint umount {mp}' when done")
    return 0


def cmd_umount(args: argparse.Namespace) -> int:
    from ..restore.browse import umount

    res = umount(args.mountpoint)
    if args.json:
        print_json(res)
    else:
        print(f"unmounted {terminal_safe(res['mountpoint'])}")
    return 0
