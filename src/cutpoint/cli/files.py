"""``cutpoint files ls|get``: list and fetch files from a point's filesystems without restoring its disks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import CutpointError
from ..restore.targets import Files
from ..units import human, parse_size
from .common import add_vault_arg, open_vault, print_json, table
from .restore import point_of


class _Intermixed(argparse.ArgumentParser):
    """Options may come between positionals (``ls VM POINT --disk D /etc``), which plain argparse refuses for an
    optional positional such as PATH."""

    _busy = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def,override]
        if self._busy:
            return super().parse_known_args(args, namespace)
        self._busy = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._busy = False


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("files", help="list and fetch files from a point (ext2/3/4, vfat; partitioned or not)")
    fs = p.add_subparsers(dest="files_command", metavar="ACTION", parser_class=_Intermixed)
    fs.required = True

    ls = fs.add_parser("ls", help="list a directory (or one file) of a point's filesystem")
    _common(ls)
    ls.add_argument("path", nargs="?", default="/", help="path in the guest filesystem (default /)")
    ls.set_defaults(func=cmd_ls)

    get = fs.add_parser("get", help="copy a file or directory out of a point")
    _common(get)
    get.add_argument("path", help="path in the guest filesystem")
    get.add_argument("--to", type=Path, required=True, help="directory to copy into")
    get.add_argument("--max-bytes", type=_size, metavar="N", help="refuse (before copying) when the files need more "
                     "than N bytes of the target (e.g. 10G); default: the target's free space")
    get.set_defaults(func=cmd_get)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except CutpointError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the VM")
    p.add_argument("point", help="point id, a unique prefix of it, or 'latest'")
    p.add_argument("--disk", help="the disk (needed when the point has several)")
    p.add_argument("--part", type=int, help="partition number (default: the whole-disk filesystem, else the first "
                   "partition with a supported filesystem)")
    p.add_argument("--json", action="store_true")
    add_vault_arg(p)


def cmd_ls(args: argparse.Namespace) -> int:
    from ..restore.browse import list_files
    from ..restore.nbdserve import export_passphrase

    vault = open_vault(args, create=False)
    export_passphrase(getattr(args, "passphrase_file", None))
    with point_of(vault, args) as m:
        res = list_files(vault, m, args.disk, args.path, args.part, getattr(args, "key_file", None))
    if args.json:
        print_json(res)
    elif "disks" in res:
        print(table(["disk", "partition", "offset", "size", "filesystem", "label"],
                    [[d["disk"], v["partition"] or "-", v["offset"], human(v["size"]), v["fstype"] or "?", v["label"]]
                     for d in res["disks"] for v in d["volumes"]]))
    else:
        print(table(["type", "mode", "size", "name"],
                    [[e["type"], e["mode"] or "-", e["size"], e["name"]] for e in res["entries"]]))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    from ..jobs.record import recorded
    from ..restore.nbdserve import export_passphrase
    from ..restore.orchestrator import restore
    from ..restore.results import job_detail

    vault = open_vault(args, create=False)
    export_passphrase(getattr(args, "passphrase_file", None))
    target = Files(args.path, args.to, disk=args.disk, part=args.part, key_file=getattr(args, "key_file", None),
                   max_bytes=args.max_bytes, warn=lambda w: print(f"cutpoint: warning: {w}", file=sys.stderr))
    with recorded(vault, "restore", args.name, detail={"mode": "files"}) as job:
        got = restore(vault, args.name, args.point, target)
        res = got.to_json()
        job.done(nbytes=got.nbytes, point=got.point, detail=job_detail(res))
    if args.json:
        print_json(res)
    else:
        links = f", {len(res['links'])} symlink(s)" if res["links"] else ""
        skipped = f", {len(res['skipped'])} skipped (see warnings)" if res["skipped"] else ""
        print(f"{res['to']}: {len(res['files'])} file(s){links}{skipped}, {human(res['bytes'])} in "
              f"{res['duration_s']} s ({res['chunks_read']} of {res['chunks_stored']} chunks read)")
    return 0
