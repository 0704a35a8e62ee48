"""A vault's keys: unlocking them (key file and passphrase, or this host's authentication key), checking they
belong to the vault, and exporting or importing them (docs/format.md §5, §6). Opening a vault unlocks its key before
anything else is opened for writing, so a wrong passphrase or a foreign key file stops a command with nothing changed.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AuthError, IntegrityError, UsageError, VaultError
from . import config as cfgmod
from . import hoststate, location, remote
from . import passphrase as pp
from .config import read_config
from .crypto import Keys, Sealer, auth_key_doc, check_key_file, unwrap_keys
from .fsutil import write_atomic
from .manifest import MAGIC as MANIFEST_MAGIC

if TYPE_CHECKING:
    from .vault import Vault

KEY_FILE = "key.json"


def sealer_for(root: Path, config: dict[str, Any], passphrase: pp.Source | None, key_file: Path | None) -> Sealer:
    """The vault's keys, and its config authenticated with them (format v3, or a v2 vault whose key file is v2)."""
    if config.get("encryption"):
        doc = load_key_file(key_file_path(root, key_file))
        keys = unlock(root, config, passphrase, key_file, doc)
        if config["version"] >= 3 or doc["version"] >= 2:
            cfgmod.check_mac(config, keys, root)
        return Sealer(keys)
    if (root / KEY_FILE).exists():
        raise IntegrityError(f"{root / 'config.json'} says the vault is unencrypted but it has a key file: "
                             "config.json was altered; restore it from a copy")
    _refuse_downgrade(root)
    if config["version"] < 3:
        return Sealer(None)
    fp = cfgmod.fingerprint(config)
    if fp is None:
        raise IntegrityError(f"{root / 'config.json'} was altered: a format v3 vault without an authentication "
                             "key; restore config.json from a copy")
    env = os.environ.get("CUTPOINT_KEY_FILE")
    keys = hoststate.load_auth_key(fp, str(config.get("id")), root,
                                   (key_file or (Path(env) if env else None)))
    cfgmod.check_mac(config, keys, root)
    return Sealer(keys, encrypt=False)


def _refuse_downgrade(root: Path) -> None:
    """An unencrypted config over encrypted manifests means config.json (and key.json) were altered: writing on
    would store plaintext chunks beside encrypted ones. A few manifests' headers tell: magic, scheme 1 (AES-GCM) and
    a key fingerprint, all three: one damaged byte is not mistaken for it (verify reports that)."""
    heads: list[tuple[str, bytes]] = []
    if location.remote_of(root) is not None:
        backend = location.backend_for(root)
        found_objs = itertools.chain(backend.list("points/"), backend.list("deleted/"))
        for obj in itertools.islice((o for o in found_objs if o.name.endswith(".manifest")), 3):
            try:
                heads.append((obj.name, backend.get(obj.name, 0, 21)))
            except VaultError:
                continue
    else:
        found = itertools.chain(root.glob("points/*/*.manifest"), root.glob("deleted/*/*.manifest"))
        for path in itertools.islice(found, 3):
            try:
                with open(path, "rb") as f:
                    heads.append((path.name, f.read(21)))
            except OSError:
                continue
    for name, head in heads:
        if len(head) == 21 and head[:4] == MANIFEST_MAGIC and head[4] == 1 and any(head[5:]):
            raise IntegrityError(f"{root / 'config.json'} says the vault is unencrypted but its points are "
                                 f"encrypted ({name}): config.json was altered; restore config.json from a "
                                 "copy, then the key (key.json, or 'cutpoint vault key import FILE')")


def key_file_path(root: Path, key_file: Path | None = None) -> Path:
    env = os.environ.get("CUTPOINT_KEY_FILE")
    return (key_file or (Path(env) if env else root / KEY_FILE)).expanduser()


def load_key_file(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise VaultError(f"key file {path} does not exist; import an exported copy with "
                         "'cutpoint vault key import FILE'") from None
    except (OSError, ValueError) as exc:
        raise VaultError(f"key file {path} is unreadable or damaged ({exc}); import an exported copy with "
                         "'cutpoint vault key import FILE'") from exc
    return check_key_file(doc, str(path))


def check_belongs(doc: dict[str, Any], config: dict[str, Any], path: Path, root: Path) -> None:
    want = config["encryption"]["key_fingerprint"]
    if doc["fingerprint"] == want and doc["vault"] != config["id"] and config["version"] >= 3:
        raise IntegrityError(f"{root / 'config.json'} was altered: its vault id {config['id']!r} is not the one "
                             f"its key {want} belongs to; restore config.json from a copy")
    if doc["fingerprint"] != want or doc["vault"] != config["id"]:
        raise AuthError(f"key file {path} belongs to another vault (key {doc['fingerprint']}); vault {root} needs "
                        f"key {want}")


def unlock(root: Path, config: dict[str, Any], passphrase: pp.Source | None, key_file: Path | None,
           doc: dict[str, Any] | None = None) -> Keys:
    path = key_file_path(root, key_file)
    doc = doc or load_key_file(path)
    check_belongs(doc, config, path, root)
    secret = (passphrase or pp.source())(f"vault {root}", False)
    return unwrap_keys(doc, secret, str(path))


def export_key(vault: "Vault", to: Path, key_file: Path | None = None) -> Path:
    """Copy the (passphrase-protected) key file that unlocked ``vault`` to ``to``, or an unencrypted vault's
    authentication key (not passphrase-protected); never overwrites."""
    if vault.sealer.keys is None:
        raise UsageError(f"vault {vault.where} is an unencrypted vault of format v2: it has no key to export")
    to = to.expanduser()
    if to.exists():
        raise UsageError(f"{to} already exists; choose another --to FILE")
    if vault.encrypted:
        data = key_file_path(vault.root, key_file).read_bytes()
    else:
        data = json.dumps(auth_key_doc(vault.sealer.keys, vault.config["id"]), indent=1).encode()
    try:
        write_atomic(to, data)          # mkstemp: mode 0600
    except OSError as exc:
        raise VaultError(f"cannot write {to}: {exc.strerror or exc}") from exc
    return to


def import_key(root: Path, src: Path, passphrase: pp.Source | None = None) -> str:
    """Install ``src`` as the vault's key file after proving it is this vault's key and the passphrase opens it."""
    root = root.expanduser()
    remote.fetch_meta(root)
    config = read_config(root)
    src = src.expanduser()
    if not config.get("encryption"):
        return _import_auth_key(root, config, src)
    doc = load_key_file(src)
    check_belongs(doc, config, src, root)
    unwrap_keys(doc, (passphrase or pp.source())(f"key file {src}", False), str(src))
    try:
        remote.put_key(root, src.read_bytes(), config)
        write_atomic(root / KEY_FILE, src.read_bytes())
    except OSError as exc:
        raise VaultError(f"cannot write {root / KEY_FILE}: {exc.strerror or exc}") from exc
    return str(doc["fingerprint"])


def _import_auth_key(root: Path, config: dict[str, Any], src: Path) -> str:
    """Install an unencrypted vault's exported authentication key in this host's state, once it is proven to be
    the key that authenticates this vault's config."""
    fp = cfgmod.fingerprint(config)
    if fp is None:
        raise UsageError(f"vault {root} is an unencrypted vault of format v2: it takes no key")
    keys = hoststate.load_auth_key(fp, str(config.get("id")), root, src)
    cfgmod.check_mac(config, keys, root)
    try:
        hoststate.save_auth_key(keys, str(config["id"]))
    except OSError as exc:
        raise VaultError(f"cannot write the host state: {exc.strerror or exc}") from exc
    return fp
