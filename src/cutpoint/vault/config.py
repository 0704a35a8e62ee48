"""``config.json``: the vault's format and parameters, checked before anything else is opened.

Format v3 authenticates it: ``mac`` is an HMAC of the config's canonical form (sorted keys, no ``mac`` field) under a
key derived from the vault key (encrypted) or the authentication key (unencrypted), checked at every open. Format v2
configs carry no MAC; they keep opening (restore, verify, backups), with their parameters bounds-checked like v3's,
and the chunk-size guards of the manifests and of backups (docs/format.md §7) keep an edited one from producing
wrong data.
"""

from __future__ import annotations

import hmac
import json
import re
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, NotFoundError, VaultError
from . import guard
from .crypto import Keys, config_mac

VAULT_FORMAT = "cutpoint-vault"
VAULT_VERSION = 4
READABLE_VERSIONS = (2, 3, 4)
PACKED_VERSION = 4            # from v4: blobs in packs, index trees (docs/format.md §18)
DEFAULT_CHUNK_SIZE = 64 << 10  # v4: the dirty bitmap's usual granularity (docs/performance.md)
MIN_CHUNK_SIZE = 4 << 10
MAX_CHUNK_SIZE = 64 << 20
CODECS = ("zstd",)
MAX_DAYS = 36500              # immutable_days, soft_delete_days (docs/format.md §19)
DEFAULT_SOFT_DELETE_DAYS = 14  # what 'vault init' sets unless told (Azure Backup's default)
_ID = re.compile(r"[0-9a-f]{32}")


def read_config(root: Path) -> dict[str, Any]:
    """``config.json``, checked for format and version; needs no passphrase. Not yet authenticated."""
    cfg_path = root / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (FileNotFoundError, NotADirectoryError):
        raise NotFoundError(f"no cutpoint vault at {root} (no config.json; a storage not mounted?); create one "
                            f"with 'cutpoint vault init {root}'") from None
    except (OSError, ValueError) as exc:
        raise VaultError(f"cannot read vault config {cfg_path}: {exc}") from exc
    if config.get("format") != VAULT_FORMAT:
        raise VaultError(f"{root} is not a cutpoint vault (config format {config.get('format')!r})")
    if config.get("version") == 1:
        raise VaultError(f"{root} is a vault of format v1 (a development build); this cutpoint reads v2 to v4 "
                         "and does not convert it: create a new vault with 'cutpoint vault init --vault NEWDIR'")
    if config.get("version") not in READABLE_VERSIONS:
        raise VaultError(f"{root} holds vault format v{config.get('version')}; this cutpoint reads "
                         f"{VAULT_FORMAT} v2 to v4")
    return config


def check_chunk_size(value: object, where: str) -> int:
    if (not isinstance(value, int) or isinstance(value, bool) or not MIN_CHUNK_SIZE <= value <= MAX_CHUNK_SIZE
            or value & (value - 1)):
        raise VaultError(f"{where}: chunk_size {value!r} is not a power of two from {MIN_CHUNK_SIZE} to "
                         f"{MAX_CHUNK_SIZE} bytes")
    return value


def validate(config: dict[str, Any], root: Path) -> None:
    """Every parameter in range and known, so that no later code meets a value it was not written for."""
    where = str(root / "config.json")
    check_chunk_size(config.get("chunk_size"), where)
    if config.get("compression") not in CODECS:
        raise VaultError(f"{where}: compression {config.get('compression')!r} is unknown (known: "
                         f"{', '.join(CODECS)})")
    if not isinstance(config.get("id"), str) or not _ID.fullmatch(config["id"]):
        raise VaultError(f"{where}: id {config.get('id')!r} is not a vault id")
    keyed = bool(config.get("encryption")) or config["version"] >= 3
    want = "blake3-keyed" if config["version"] >= PACKED_VERSION else "hmac-sha256" if keyed else "sha256"
    if config.get("chunk_id") != want:
        raise VaultError(f"{where}: chunk_id {config.get('chunk_id')!r} does not fit this vault's keys")
    enc = config.get("encryption")
    if enc is not None and (not isinstance(enc, dict) or enc.get("cipher") != "aes-256-gcm"
                            or not isinstance(enc.get("key_fingerprint"), str)):
        raise VaultError(f"{where}: encryption {enc!r} is unknown")
    if config["version"] >= PACKED_VERSION:
        ps, fan = config.get("pack_size"), config.get("tree_fanout")
        if not isinstance(ps, int) or isinstance(ps, bool) or not 1 << 20 <= ps <= 256 << 20:
            raise VaultError(f"{where}: pack_size {ps!r} is not from 1 MiB to 256 MiB")
        if not isinstance(fan, int) or isinstance(fan, bool) or not 16 <= fan <= 1 << 16:
            raise VaultError(f"{where}: tree_fanout {fan!r} is not from 16 to 65536")
    if config.get("object_lock") not in (None, "compliance", "governance"):      # S3 Object Lock mode (§20.5)
        raise VaultError(f"{where}: object_lock {config.get('object_lock')!r} is not compliance or governance")
    for name in ("immutable_days", "soft_delete_days"):       # absent: 0 (vaults made before they existed)
        days = config.get(name, 0)
        if not isinstance(days, int) or isinstance(days, bool) or not 0 <= days <= MAX_DAYS:
            raise VaultError(f"{where}: {name} {days!r} is not a number of days from 0 to {MAX_DAYS}")
    guard.validate(config, where)                             # absent: not guarded (docs/format.md §21)
    if config["version"] >= 3:
        auth = config.get("authentication")
        if not isinstance(auth, dict) or auth.get("mac") != "hmac-sha256" \
                or not isinstance(auth.get("key_fingerprint"), str):
            raise VaultError(f"{where}: authentication {auth!r} is unknown")


def canonical(config: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in config.items() if k != "mac"}, sort_keys=True,
                      separators=(",", ":")).encode()


def seal(config: dict[str, Any], keys: Keys) -> dict[str, Any]:
    return {**config, "mac": config_mac(keys, canonical(config))}


def check_mac(config: dict[str, Any], keys: Keys, root: Path) -> None:
    """A v3 config (or any config whose key file is v2) must carry this key's MAC; an edit is refused by name."""
    got = config.get("mac")
    if not isinstance(got, str) or not hmac.compare_digest(got, config_mac(keys, canonical(config))):
        raise IntegrityError(f"{root / 'config.json'} was altered (its authentication does not match the vault "
                             "key): restore config.json from a copy; nothing was opened")


def fingerprint(config: dict[str, Any]) -> str | None:
    """The fingerprint of the key that authenticates this vault's data, or None (v2 unencrypted: no key)."""
    enc = config.get("encryption")
    if enc:
        return str(enc["key_fingerprint"])
    auth = config.get("authentication")
    return str(auth["key_fingerprint"]) if isinstance(auth, dict) and auth.get("key_fingerprint") else None
