"""Pieces every command group shares: the vault option, JSON printing, tables.

Every module of ``cli/`` imports at its top only what building the argument parser needs; what a command runs on
(the vault, the drivers, restore, the service) is imported inside the command's function, so that ``cutpoint`` starts
with only its own command's dependencies (``tests/cli/test_lazy_imports.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..paths import default_vault
from ..vault import location, passphrase

if TYPE_CHECKING:
    from ..vault.vault import Vault


def add_vault_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vault", type=str, default=None, metavar="VAULT",
                   help="vault directory, or s3://BUCKET/PREFIX[?endpoint=URL&profile=AWS_PROFILE] (default: "
                        "$CUTPOINT_VAULT or ~/.local/share/cutpoint/vault)")
    p.add_argument("--s3-endpoint", default=None, metavar="URL",
                   help="S3 vaults: the endpoint, unless the address names one (else $CUTPOINT_S3_ENDPOINT; "
                        "credentials as the AWS tools read them, or the address's profile=)")
    p.add_argument("--passphrase-file", type=Path, default=None, metavar="FILE",
                   help="encrypted vault: read the passphrase from FILE (else $CUTPOINT_PASSPHRASE_FILE, "
                        "$CUTPOINT_PASSPHRASE, or a prompt)")
    p.add_argument("--key-file", type=Path, default=None, metavar="FILE",
                   help="encrypted vault: use this key file instead of the vault's own (or $CUTPOINT_KEY_FILE)")


def resolve_vault(args: argparse.Namespace) -> None:
    """Turn ``--vault`` (and ``vault init DIR``) into the vault root every command passes on: a directory, or an
    S3 vault's directory on this host (``vault/location.py``). Once, right after parsing."""
    if not hasattr(args, "vault"):
        return
    endpoint = getattr(args, "s3_endpoint", None)
    for attr in ("vault", "dir"):
        value = getattr(args, attr, None)
        if isinstance(value, str):
            setattr(args, attr, location.resolve(value, endpoint))
    env = os.environ.get("CUTPOINT_VAULT", "")
    if args.vault is None and getattr(args, "dir", None) is None and location.is_remote(env):
        args.vault = location.resolve(env, endpoint)


def open_vault(args: argparse.Namespace, *, create: bool = False, write: str | None = None) -> Vault:
    """The vault of ``--vault`` (or the default); a missing one is an error naming 'cutpoint vault init', never
    created here (``create`` is accepted for old call sites and ignored). ``write`` names what the command will
    write (backup, prune, gc): then a vault this host's memory disagrees with is refused at once, with one line,
    instead of warned about."""
    from ..vault.vault import Vault

    del create
    vault = Vault.open(args.vault or default_vault(),
                       passphrase=passphrase.source(getattr(args, "passphrase_file", None)),
                       key_file=getattr(args, "key_file", None), warn=write is None)
    if write is not None:
        try:
            vault.require_trusted(write)
        except BaseException:
            vault.close()
            raise
    return vault


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
