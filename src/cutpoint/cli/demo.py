"""``cutpoint demo``: the whole story on the embedded default, end to end, in about a minute.

Boots a lab VM with three disks running the ordered-write workload, protects it, takes three backups while it
writes, restores each point, has the lab verifier judge each restore, prints a table, and stops the VM.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import NotFoundError
from ..restore.targets import Images
from ..units import human, parse_size
from ..paths import default_vault
from ..vault import location, passphrase
from .common import add_vault_arg, open_vault, table
from .vault import cmd_init

if TYPE_CHECKING:
    from ..vault.vault import Vault

DEMO_VM = "cutpoint-demo"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="boot a lab VM, back it up under load, restore and verify every point")
    p.add_argument("--points", type=int, default=3)
    p.add_argument("--disks", type=int, default=3)
    p.add_argument("--size", default="128M")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between backups")
    p.add_argument("--offsite", default=None, metavar="VAULT", help="also copy the points into VAULT (a directory "
                   "or s3://BUCKET/PREFIX; created with --copy-of if new) and restore the newest from the copy")
    add_vault_arg(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..backup.run import backup
    from ..catalog.db import VmRecord
    from ..lab import vm as labvm
    from ..lab.verify import verify_dir
    from ..restore.orchestrator import restore

    root = (args.vault or default_vault()).expanduser()
    if not (root / "config.json").exists():     # no command creates a vault implicitly: the demo runs 'vault init'
        print(f"no vault at {root}: running 'cutpoint vault init --no-encrypt {root}' (unencrypted, for the demo; "
              "real vaults: 'cutpoint vault init', encrypted)")
        cmd_init(argparse.Namespace(dir=None, vault=root, encrypt=False, no_encrypt=True, chunk_size=None,
                                    json=False, passphrase_file=None, key_file=None))
    vault = open_vault(args)
    size = parse_size(args.size)
    print(f"vault: {vault.where}")
    if _exists(DEMO_VM):
        labvm.remove(DEMO_VM)
    print(f"booting lab VM {DEMO_VM!r} with {args.disks} disks of {human(size)} and the ordered-write workload ...")
    vm = labvm.up(DEMO_VM, [labvm.DiskSpec(size) for _ in range(args.disks)])
    rows = []
    ok = True
    scratch = Path(tempfile.mkdtemp(prefix="cutpoint-demo-"))
    try:
        print(f"booted in {vm.to_json().get('boot_seconds', '?')} s ({vm.accel}); QMP socket {vm.qmp}")
        try:
            vault.catalog.update_vm(DEMO_VM, address=str(vm.qmp))
        except NotFoundError:
            vault.catalog.add_vm(VmRecord(DEMO_VM, "qmp", str(vm.qmp), time.strftime("%Y-%m-%dT%H:%M:%SZ"), {}))
        for n in range(args.points):
            time.sleep(args.interval)
            res = backup(vault, DEMO_VM)
            out = scratch / res.point
            restore(vault, DEMO_VM, res.point, Images(out))
            verdict = verify_dir(out)
            ok &= verdict.ok
            rows.append([res.point, res.mode, f"{res.pause_ms:.1f}", human(res.read_bytes), human(res.stored_bytes),
                         f"consistent (k={verdict.k})" if verdict.ok else "VIOLATION: " + "; ".join(
                             verdict.violations[:2])])
            print(f"point {n + 1}/{args.points}: {rows[-1][-1]}")
        if args.offsite and rows:
            ok &= _offsite(vault, args, scratch)
    finally:
        labvm.down(DEMO_VM)
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(table(["point", "mode", "pause ms", "bytes read", "bytes stored", "verdict"], rows))
    print()
    print("every point is a prefix of the guest's global write order: the cut is atomic across all disks" if ok
          else "a point failed verification")
    return 0 if ok else 7


def _offsite(vault: Vault, args: argparse.Namespace, scratch: Path) -> bool:
    """The demo's points copied into ``--offsite`` ('cutpoint copy'), the newest restored from the copy alone and
    judged by the lab verifier."""
    from ..lab.verify import verify_dir
    from ..restore.orchestrator import restore
    from ..vault.copy import copy
    from ..vault.vault import Vault

    target = location.resolve(args.offsite, getattr(args, "s3_endpoint", None))
    secret = passphrase.source(args.passphrase_file)
    if not location.backend_for(target).exists("config.json"):
        print(f"creating the offsite vault {location.describe(target)} with the same keys "
              f"('cutpoint vault init {args.offsite} --copy-of {location.describe(vault.root)}')")
        Vault.create(target, encrypt=vault.encrypted, passphrase=secret, copy_of=vault)
    dst = Vault.open(target, passphrase=secret)
    try:
        res = copy(vault, dst, DEMO_VM)
        newest = dst.catalog.points(DEMO_VM)[-1]
        out = scratch / f"offsite-{newest.id}"
        restore(dst, DEMO_VM, newest.id, Images(out))
    finally:
        dst.close()
    verdict = verify_dir(out)
    print(f"offsite copy {res.target}: {len(res.copied)} point(s) copied ({len(res.skipped)} already there), "
          f"{human(res.bytes)} in {res.duration_s:.1f} s; point {newest.id} restored from the copy: "
          + (f"consistent (k={verdict.k})" if verdict.ok else "VIOLATION: " + "; ".join(verdict.violations[:2])))
    return verdict.ok


def _exists(name: str) -> bool:
    from ..lab import vm as labvm

    try:
        labvm.get(name)
        return True
    except NotFoundError:
        return False
