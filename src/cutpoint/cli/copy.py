"""``cutpoint copy``: copy points into another vault that shares the source's keys (an offsite copy), blobs as
stored, only what the target lacks; resumable, verified at the target (``vault/copy.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..names import check_vm_name
from ..units import human, parse_size
from ..vault import location, passphrase
from .common import print_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("copy", help="copy points into another vault (made with 'vault init DEST --copy-of SRC'): "
                       "only what it lacks, as stored, resumable")
    p.add_argument("vm", nargs="?", default=None, help="only this VM's points (default: every VM's)")
    p.add_argument("--from", dest="source", required=True, metavar="VAULT",
                   help="the source vault: a directory or s3://BUCKET/PREFIX[?endpoint=URL&profile=AWS_PROFILE]")
    p.add_argument("--to", dest="target", required=True, metavar="VAULT",
                   help="the target vault, made with 'cutpoint vault init VAULT --copy-of SOURCE'; on another S3 "
                        "service with other credentials: s3://BUCKET/PREFIX?endpoint=URL&profile=AWS_PROFILE")
    p.add_argument("--points", nargs="+", default=None, metavar="POINT", help="only these points (ids or unique "
                   "prefixes; default: all)")
    p.add_argument("--limit-rate", default=None, metavar="RATE", help="at most RATE bytes per second written "
                   "to the target (e.g. 20M)")
    p.add_argument("--verify", action="store_true", help="also read back and decode every blob of the copied "
                   "points at the target (always: each is checked to be in the target's index)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--s3-endpoint", default=None, metavar="URL",
                   help="S3 vaults: the endpoint of each vault whose address names none (else "
                        "$CUTPOINT_S3_ENDPOINT)")
    p.add_argument("--passphrase-file", type=Path, default=None, metavar="FILE",
                   help="encrypted vaults: read the passphrase of the source's key file (and of the target's, "
                        "unless --to-passphrase-file) from FILE (else $CUTPOINT_PASSPHRASE_FILE, "
                        "$CUTPOINT_PASSPHRASE, or a prompt)")
    p.add_argument("--to-passphrase-file", type=Path, default=None, metavar="FILE",
                   help="encrypted vaults: the target's key file has another passphrase, read from FILE")
    p.set_defaults(func=cmd_copy)


def cmd_copy(args: argparse.Namespace) -> int:
    from ..vault.copy import copy
    from ..vault.vault import Vault

    if args.vm is not None:
        check_vm_name(args.vm)
    rate = parse_size(args.limit_rate) if args.limit_rate else None
    secret = passphrase.source(args.passphrase_file)
    src = Vault.open(location.resolve(args.source, args.s3_endpoint), passphrase=secret)
    try:
        dst = Vault.open(location.resolve(args.target, args.s3_endpoint), warn=False,
                         passphrase=passphrase.source(args.to_passphrase_file) if args.to_passphrase_file else secret)
        try:
            res = copy(src, dst, args.vm, args.points, rate=rate, verify_data=args.verify)
        finally:
            dst.close()
    finally:
        src.close()
    if args.json:
        print_json(res.to_json())
        return 0
    print(f"copied {len(res.copied)} point(s) from {res.source} to {res.target}"
          + (f" ({len(res.skipped)} already there)" if res.skipped else "")
          + f": {res.blobs} blobs, {human(res.bytes)} in {res.packs} pack(s), {res.reused} blobs already held, "
            f"{res.duration_s:.1f} s" + (f"; {res.verified} blobs read back and decoded" if args.verify else ""))
    return 0
