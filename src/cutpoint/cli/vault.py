"""``cutpoint vault``: create a vault (optionally encrypted), show its format, export and import its key."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError
from ..paths import default_vault
from ..units import parse_size
from ..vault import passphrase
from ..vault.vault import DEFAULT_CHUNK_SIZE, KEY_FILE, Vault, export_key, import_key, read_config
from .common import add_vault_arg, open_vault, print_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("vault", help="create a vault, show its format, export or import its key")
    vs = p.add_subparsers(dest="vault_command", metavar="ACTION")
    vs.required = True

    i = vs.add_parser("init", help="create a vault (with --encrypt: AES-256-GCM, key protected by a passphrase)")
    i.add_argument("dir", nargs="?", type=Path, metavar="DIR", help="where (same as --vault DIR)")
    i.add_argument("--encrypt", action="store_true", help="encrypt chunks and manifests")
    i.add_argument("--chunk-size", default=None, help=f"chunk size (default {DEFAULT_CHUNK_SIZE >> 20}M)")
    i.add_argument("--json", action="store_true")
    add_vault_arg(i)
    i.set_defaults(func=cmd_init)

    info = vs.add_parser("info", help="show the vault's format, encryption and key fingerprint")
    info.add_argument("--json", action="store_true")
    add_vault_arg(info)
    info.set_defaults(func=cmd_info)

    k = vs.add_parser("key", help="export or import the key file of an encrypted vault")
    ks = k.add_subparsers(dest="key_command", metavar="ACTION")
    ks.required = True
    e = ks.add_parser("export", help="copy the key file (still passphrase-protected) somewhere safe")
    e.add_argument("--to", type=Path, required=True, metavar="FILE")
    add_vault_arg(e)
    e.set_defaults(func=cmd_export)
    m = ks.add_parser("import", help="install an exported key file as the vault's key (checked first)")
    m.add_argument("file", type=Path)
    add_vault_arg(m)
    m.set_defaults(func=cmd_import)


def _root(args: argparse.Namespace) -> Path:
    return (args.vault or default_vault()).expanduser()


def cmd_init(args: argparse.Namespace) -> int:
    if args.dir is not None:
        if args.vault is not None and args.vault != args.dir:
            raise UsageError(f"two vault directories given ({args.dir} and --vault {args.vault}); give one")
        args.vault = args.dir
    root = _root(args)
    size = parse_size(args.chunk_size) if args.chunk_size else DEFAULT_CHUNK_SIZE
    Vault.create(root, chunk_size=size, encrypt=args.encrypt, passphrase=passphrase.source(args.passphrase_file))
    return _show(root, args.json, "created ")


def cmd_info(args: argparse.Namespace) -> int:
    return _show(_root(args), args.json, "")


def _show(root: Path, as_json: bool, verb: str) -> int:
    cfg = read_config(root)
    enc = cfg.get("encryption") or {}
    if as_json:
        print_json({"vault": str(root), **cfg})
        return 0
    print(f"{verb}vault {root}: {cfg['format']} v{cfg['version']}, chunks of {cfg['chunk_size']} bytes, "
          + (f"encrypted ({enc['cipher']}, key {enc['key_fingerprint']}, key file {root / KEY_FILE})" if enc
             else "not encrypted"))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    vault = open_vault(args, create=False)
    to = export_key(vault, args.to, args.key_file)
    print(f"exported the key of vault {vault.root} (fingerprint {vault.sealer.fingerprint}) to {to}; it is still "
          "protected by the vault's passphrase: keep both, separately")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    root = _root(args)
    fp = import_key(root, args.file, passphrase.source(args.passphrase_file))
    print(f"installed key {fp} as {root / KEY_FILE}")
    return 0
