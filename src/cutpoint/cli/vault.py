"""``cutpoint vault``: create a vault (encrypted unless --no-encrypt; immutability and soft delete), show its format
and what it does not protect against, lengthen its protection, accept a deliberately changed vault (trust), export
and import its key."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import IntegrityError, UsageError
from ..paths import default_vault, state_home
from ..units import parse_size
from ..vault import config as cfgmod
from ..vault import guard, location, passphrase
from ..vault.config import DEFAULT_CHUNK_SIZE, DEFAULT_SOFT_DELETE_DAYS, read_config
from . import approvals
from .common import add_vault_arg, open_vault, print_json

if TYPE_CHECKING:
    from ..vault.protection import Protection


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("vault", help="create a vault, show its format, trust a changed one, export or import its key")
    vs = p.add_subparsers(dest="vault_command", metavar="ACTION")
    vs.required = True

    i = vs.add_parser("init", help="create a vault: AES-256-GCM, key protected by a passphrase (unless --no-encrypt)")
    i.add_argument("dir", nargs="?", type=str, metavar="DIR", help="where: a directory or s3://BUCKET/PREFIX "
                   "(same as --vault)")
    i.add_argument("--encrypt", action="store_true", help="encrypt chunks and manifests (the default; kept for "
                   "compatibility)")
    i.add_argument("--no-encrypt", action="store_true", help="store data unencrypted (still authenticated, with a "
                   "key this host keeps outside the vault)")
    i.add_argument("--chunk-size", default=None, help=f"chunk size, a power of two (default "
                   f"{DEFAULT_CHUNK_SIZE >> 10}K: the dirty bitmap's granularity)")
    i.add_argument("--immutable-days", type=int, default=0, metavar="N", help="no point may be pruned or deleted "
                   "before it is N days old, and soft delete cannot be shortened (default 0: off)")
    i.add_argument("--soft-delete-days", type=int, default=DEFAULT_SOFT_DELETE_DAYS, metavar="N",
                   help=f"a pruned or deleted point stays recoverable N days (default {DEFAULT_SOFT_DELETE_DAYS}; "
                        "0: off)")
    i.add_argument("--object-lock", choices=("compliance", "governance"), default=None,
                   help="S3 vaults (s3://BUCKET/PREFIX) only: the Object Lock mode that enforces --immutable-days")
    i.add_argument("--copy-of", default=None, metavar="VAULT", help="make a target for 'cutpoint copy' from VAULT "
                   "(a directory or s3://BUCKET/PREFIX): the same keys, encryption and chunk parameters, its own id")
    i.add_argument("--json", action="store_true")
    add_vault_arg(i)
    i.set_defaults(func=cmd_init)

    pr = vs.add_parser("protect", help="lengthen the vault's immutability or soft delete (an immutable vault "
                       "refuses to shorten either; a guarded one shortens only with its guard's approval)")
    pr.add_argument("--immutable-days", type=int, default=None, metavar="N")
    pr.add_argument("--soft-delete-days", type=int, default=None, metavar="N")
    pr.add_argument("--request", default=None, metavar="ID", help="a guarded vault: the request its guard approved "
                    "for this reduction ('cutpoint approvals')")
    pr.add_argument("--json", action="store_true")
    add_vault_arg(pr)
    pr.set_defaults(func=cmd_protect)

    info = vs.add_parser("info", help="show the vault's format, encryption, key fingerprint and what it does not "
                         "protect against")
    info.add_argument("--json", action="store_true")
    add_vault_arg(info)
    info.set_defaults(func=cmd_info)

    t = vs.add_parser("trust", help="accept the vault at this path as it is now (after a deliberate swap, "
                      "restore from an older copy, or re-creation)")
    add_vault_arg(t)
    t.set_defaults(func=cmd_trust)

    ri = vs.add_parser("rebuild-index", help="format v4: rebuild the index from the packs' own tables of contents "
                       "(after index objects were lost or damaged)")
    ri.add_argument("--json", action="store_true")
    add_vault_arg(ri)
    ri.set_defaults(func=cmd_rebuild_index)

    rc = vs.add_parser("rebuild-catalog", help="format v4: rebuild this host's catalog of points from the vault's "
                       "manifests (a second host of an S3 vault, or a lost catalog.sqlite)")
    rc.add_argument("--json", action="store_true")
    add_vault_arg(rc)
    rc.set_defaults(func=cmd_rebuild_catalog)

    approvals.register_vault(vs)

    k = vs.add_parser("key", help="export or import the key (file) of a vault")
    ks = k.add_subparsers(dest="key_command", metavar="ACTION")
    ks.required = True
    e = ks.add_parser("export", help="copy the key somewhere safe (an encrypted vault's stays passphrase-protected)")
    e.add_argument("--to", type=Path, required=True, metavar="FILE")
    add_vault_arg(e)
    e.set_defaults(func=cmd_export)
    m = ks.add_parser("import", help="install an exported key as the vault's key (checked first)")
    m.add_argument("file", type=Path)
    add_vault_arg(m)
    m.set_defaults(func=cmd_import)


def _root(args: argparse.Namespace) -> Path:
    return (args.vault or default_vault()).expanduser()


def cmd_init(args: argparse.Namespace) -> int:
    from ..vault.protection import Protection, check_days
    from ..vault.vault import Vault

    if args.dir is not None:
        if args.vault is not None and args.vault != args.dir:
            raise UsageError(f"two vault directories given ({args.dir} and --vault {args.vault}); give one")
        args.vault = args.dir
    if args.encrypt and args.no_encrypt:
        raise UsageError("--encrypt and --no-encrypt contradict each other; give one")
    root = _root(args)
    if getattr(args, "object_lock", None) is not None and location.remote_of(root) is None:
        raise UsageError(f"--object-lock is for vaults on S3 (s3://BUCKET/PREFIX), not the directory {root}: a local "
                         "directory has no Object Lock; drop --object-lock (--immutable-days N alone makes cutpoint "
                         "refuse early deletion there); nothing was created")
    prot = Protection(check_days(getattr(args, "immutable_days", 0), "--immutable-days"),
                      check_days(getattr(args, "soft_delete_days", DEFAULT_SOFT_DELETE_DAYS), "--soft-delete-days"))
    size = parse_size(args.chunk_size) if args.chunk_size else None
    source = None
    copy_of = getattr(args, "copy_of", None)                # callers such as 'demo' pass a Namespace of their own
    if copy_of is not None:
        src_root = location.resolve(copy_of, getattr(args, "s3_endpoint", None))
        if src_root == root:
            raise UsageError(f"--copy-of {copy_of} names the vault being created; give the source vault")
        source = Vault.open(src_root, passphrase=passphrase.source(args.passphrase_file))
    try:
        Vault.create(root, chunk_size=size, encrypt=not args.no_encrypt,
                     passphrase=passphrase.source(args.passphrase_file), protection=prot, copy_of=source,
                     object_lock=getattr(args, "object_lock", None))
    finally:
        if source is not None:
            source.close()
    return _show(root, args.json, "created ")


def cmd_protect(args: argparse.Namespace) -> int:
    if args.immutable_days is None and args.soft_delete_days is None:
        raise UsageError("vault protect needs --immutable-days N or --soft-delete-days N; nothing was changed")
    from ..vault import protection

    vault = open_vault(args, write="changing the vault's protection")
    prot = protection.change(vault, args.immutable_days, args.soft_delete_days, args.request)
    if args.json:
        print_json(prot.to_config())
    else:
        print(f"vault {vault.where}: {_describe(prot)}")
    return 0


def _describe(prot: Protection) -> str:
    return ((f"immutable: no point is pruned or deleted before it is {prot.immutable_days} days old" if
             prot.immutable_days else "not immutable") + "; "
            + (f"soft delete: removed points stay recoverable {prot.soft_delete_days} days" if prot.soft_delete_days
               else "no soft delete: removed points are gone at the next gc"))


def cmd_info(args: argparse.Namespace) -> int:
    from ..vault import remote

    remote.fetch_meta(_root(args))          # S3: the bucket's config, as it is now
    return _show(_root(args), args.json, "")


def not_protected(cfg: dict[str, Any]) -> list[str]:
    """What this vault does not protect against, plainly (``vault info``; docs/threat-model.md)."""
    out = []
    if not cfg.get("encryption"):
        out.append("confidentiality: chunks and manifests are not encrypted; anyone who can read the vault "
                   "directory can read the disks' data")
        if cfgmod.fingerprint(cfg):
            out.append("tampering, checked only on a host that holds the authentication key (kept in "
                       f"{state_home()}/keys; 'cutpoint vault key export'); whoever holds that key can forge points")
        else:
            out.append("tampering: format v2 seals are unkeyed checksums; whoever can write the vault can replace "
                       "data undetected; create a v3 vault with 'cutpoint vault init' and back up into it")
    if cfg.get("version", 0) < 3:
        out.append("an edited config.json (format v2 does not authenticate it; its parameters are still checked)")
    out.append("deletion by root or by anyone who can write the vault directory: on a local directory, immutability "
               "and soft delete are enforced by cutpoint, not by the filesystem; they protect against mistakes, "
               "not against root")
    out.append("deletion, or replacement by an older copy, on a host that has never used this vault (a host "
               "that has refuses writes and warns on reads)")
    return out


def _show(root: Path, as_json: bool, verb: str) -> int:
    from ..vault.protection import Protection

    cfg = read_config(root)
    enc = cfg.get("encryption") or {}
    gaps = not_protected(cfg)
    if as_json:
        print_json({"vault": location.describe(root), **cfg, **Protection.of(cfg).to_config(),
                    "authenticated": cfgmod.fingerprint(cfg) is not None, "not_protected_against": gaps})
        return 0
    fp = cfgmod.fingerprint(cfg)
    print(f"{verb}vault {location.describe(root)}: {cfg['format']} v{cfg['version']}, chunks of {cfg['chunk_size']} bytes, "
          + (f"encrypted ({enc['cipher']}, key {enc['key_fingerprint']}, key file {_key_where(root)})" if enc
             else f"not encrypted, authenticated (key {fp}, held by this host)" if fp
             else "not encrypted, not authenticated"))
    print(_describe(Protection.of(cfg)))
    g = guard.of(cfg)
    prot = Protection.of(cfg)
    print(f"guarded by key {g.fingerprint}: reducing protection, early deletes and deleting the vault need its "
          "approval ('cutpoint approvals')" if g else
          "no guard: nobody can lower its immutability or soft delete (a guard can be added only while it holds "
          "no point)"
          if prot.immutable_days > 0 else
          "no guard: reducing protection needs no second principal ('cutpoint vault guard init')")
    if cfg.get("copy_of"):
        print(f"a copy target of vault {cfg['copy_of']} (its keys and chunk parameters): 'cutpoint copy --from "
              f"THAT --to {location.describe(root)}' fills it")
    print("does not protect against: " + "; ".join(gaps))
    return 0


def _key_where(root: Path) -> str:
    from ..vault.keyfile import KEY_FILE

    loc = location.remote_of(root)
    return f"{loc.url}/{KEY_FILE}" if loc is not None else str(root / KEY_FILE)


def cmd_trust(args: argparse.Namespace) -> int:
    from ..vault.vault import Vault

    vault = Vault.open(_root(args), passphrase=passphrase.source(args.passphrase_file), key_file=args.key_file,
                       accept_change=True)
    vms = {p.vm for p in vault.catalog.points()}
    print(f"this host now trusts vault {vault.where} as it is: id {vault.config['id']}, key "
          f"{vault.sealer.fingerprint or 'none'}, {len(vms)} VM(s) with points")
    return 0


def cmd_rebuild_index(args: argparse.Namespace) -> int:
    from ..vault.packstore import PackStore

    vault = open_vault(args)
    if not isinstance(vault.chunks, PackStore):
        raise UsageError(f"vault {vault.where} is format v{vault.config['version']}, which has no index to rebuild "
                         "(a file per chunk); nothing done")
    vault.require_trusted("rebuilding the index")
    with vault.gc_lock():
        packs, problems = vault.chunks.rebuild_index()
    if args.json:
        print_json({"packs": packs, "problems": problems})
    else:
        print(f"indexed {packs} pack(s) of {vault.where}" + (f"; left out: {'; '.join(problems)}" if problems else ""))
    if problems:
        raise IntegrityError(f"{len(problems)} pack(s) could not be indexed: {problems[0]}; run 'cutpoint verify' "
                             "to see which points they affect")
    return 0


def cmd_rebuild_catalog(args: argparse.Namespace) -> int:
    from ..vault import remote
    from ..vault.packstore import PackStore

    vault = open_vault(args)
    if not isinstance(vault.chunks, PackStore):
        raise UsageError(f"vault {vault.where} is format v{vault.config['version']}: its catalog cannot be rebuilt "
                         "from its manifests (only format v4's can); nothing done")
    with vault.points_lock(shared=False):
        res = remote.sync_catalog(vault, rebuild=True)
    where = location.describe(vault.root)
    if args.json:
        print_json({"vault": where, "points": len(res.added), "problems": res.problems})
    else:
        print(f"catalog of {where} rebuilt: {len(res.added)} point(s)"
              + (f"; left out: {'; '.join(res.problems)}" if res.problems else ""))
    if res.problems:
        raise IntegrityError(f"{len(res.problems)} manifest(s) could not be read: {res.problems[0]}; run "
                             "'cutpoint verify' after the next backup")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..vault.keyfile import export_key

    vault = open_vault(args)
    to = export_key(vault, args.to, args.key_file)
    if vault.encrypted:
        print(f"exported the key of vault {vault.where} (fingerprint {vault.sealer.fingerprint}) to {to}; it is "
              "still protected by the vault's passphrase: keep both, separately")
    else:
        print(f"exported the authentication key of vault {vault.where} (fingerprint {vault.sealer.fingerprint}) to "
              f"{to}; it is not passphrase-protected: whoever has it can forge points, so keep it private; "
              "another host needs it to read this vault ('cutpoint vault key import FILE')")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..vault.keyfile import KEY_FILE, import_key

    root = _root(args)
    fp = import_key(root, args.file, passphrase.source(args.passphrase_file))
    where = root / KEY_FILE if read_config(root).get("encryption") else state_home() / "keys"
    print(f"installed key {fp} in {where}")
    return 0
