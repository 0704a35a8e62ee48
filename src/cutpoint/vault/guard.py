"""The vault's guard (multi-user authorization, Azure's Resource Guard): a second principal's Ed25519 key.

``vault guard init --to FILE`` makes a key pair: the public key goes into ``config.json`` (field ``guard``, covered
by the config MAC, docs/format.md §21), the private key only into FILE (0600, never overwritten), which belongs to
someone other than the operator. From then on reducing the vault's protection, deleting a point before its
immutability ends and deleting the vault each need a request that the guard key signed (``approvals.py``).

A guard is a *second* principal, so it must exist before the vault is immutable: an unguarded immutable vault's
protection is absolute (nobody may lower it), and a guard that the operator alone could add to it would be one
whose key the operator holds, lifting that protection by themselves. ``check_can_add`` refuses that (exit 12).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AuthError, ImmutableError, UsageError, VaultError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from .vault import Vault

# ``cryptography`` is imported only where a key is made, loaded or checked: every vault open reads the config's
# guard (``of``, ``validate``), and that must not cost ~35 ms of imports.

ALGORITHM = "ed25519"
KEY_FORMAT = "cutpoint-guard-key"
MAX_KEY_FILE = 4096
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FP = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class Guard:
    """The guard as the config names it: its public key (32 bytes, hex) and that key's fingerprint."""
    public_key: str
    fingerprint: str

    def to_config(self) -> dict[str, str]:
        return {"algorithm": ALGORITHM, "public_key": self.public_key, "fingerprint": self.fingerprint}

    def verify(self, signature: bytes, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        try:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.public_key)).verify(signature, message)
            return True
        except (InvalidSignature, ValueError):
            return False


@dataclass(frozen=True)
class GuardKey:
    """The guard's secret, from its key file: for one vault (by id)."""
    vault: str
    private: Ed25519PrivateKey
    guard: Guard

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def fingerprint_of(public_key_hex: str) -> str:
    return hashlib.sha256(bytes.fromhex(public_key_hex)).hexdigest()[:16]


def of(config: dict[str, Any]) -> Guard | None:
    """The guard of a config (``config.validate`` checked its form), or None: the vault is not guarded."""
    g = config.get("guard")
    if g is None:
        return None
    return Guard(str(g["public_key"]), str(g["fingerprint"]))


def validate(config: dict[str, Any], where: str) -> None:
    """``guard``, if present: exactly algorithm, a 32-byte public key and its fingerprint."""
    if "guard" not in config:
        return
    g = config["guard"]
    if (not isinstance(g, dict) or set(g) != {"algorithm", "public_key", "fingerprint"}
            or g["algorithm"] != ALGORITHM or not isinstance(g["public_key"], str)
            or not _HEX64.fullmatch(g["public_key"]) or g["fingerprint"] != fingerprint_of(g["public_key"])):
        raise VaultError(f"{where}: guard {g!r} is not an Ed25519 guard key")


def _public_hex(private: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def generate(vault_id: str) -> GuardKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    private = Ed25519PrivateKey.generate()
    pub = _public_hex(private)
    return GuardKey(vault_id, private, Guard(pub, fingerprint_of(pub)))


def write_key_file(key: GuardKey, to: Path) -> None:
    """The guard's key file, 0600, created exclusively: an existing file (or a link) is never overwritten."""
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
    secret = key.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()
    doc = {"format": KEY_FORMAT, "version": 1, "vault": key.vault, "algorithm": ALGORITHM,
           "public_key": key.guard.public_key, "private_key": secret}
    try:
        fd = os.open(to, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise UsageError(f"{to} already exists; choose another --to FILE (a guard key is never overwritten); "
                         "nothing was changed") from None
    except OSError as exc:
        raise VaultError(f"cannot create the guard key file {to}: {exc.strerror or exc}; nothing was changed") \
            from exc
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc, indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        to.unlink(missing_ok=True)
        raise VaultError(f"cannot write the guard key file {to}: {exc.strerror or exc}") from exc


def load_key_file(path: Path) -> GuardKey:
    """A guard key file, parsed strictly; its public key must be its private key's."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise UsageError(f"guard key file {path} does not exist") from None
    except OSError as exc:
        raise VaultError(f"cannot read guard key file {path}: {exc.strerror or exc}") from exc
    try:
        if len(data) > MAX_KEY_FILE:
            raise ValueError("too large")
        doc = json.loads(data)
        if (not isinstance(doc, dict) or set(doc) != {"format", "version", "vault", "algorithm", "public_key",
                                                      "private_key"}
                or doc["format"] != KEY_FORMAT or doc["version"] != 1 or doc["algorithm"] != ALGORITHM
                or not isinstance(doc["vault"], str) or not re.fullmatch(r"[0-9a-f]{32}", doc["vault"])
                or not isinstance(doc["private_key"], str) or not _HEX64.fullmatch(doc["private_key"])):
            raise ValueError("not a cutpoint guard key")
        private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(doc["private_key"]))
        pub = _public_hex(private)
        if doc["public_key"] != pub:
            raise ValueError("its public key is not its private key's")
    except (ValueError, TypeError) as exc:
        raise VaultError(f"guard key file {path} is damaged or not a guard key ({exc})") from exc
    return GuardKey(doc["vault"], private, Guard(pub, fingerprint_of(pub)))


def check_key_for(key: GuardKey, config: dict[str, Any], path: Path) -> Guard:
    """The vault's guard, if ``key`` is it; else an error naming both keys (a key of another vault, or an old
    one)."""
    guard = of(config)
    if guard is None:
        raise UsageError(f"vault {config.get('id')} has no guard: nothing needs approval; 'cutpoint vault guard "
                         "init --to FILE' makes one")
    if key.guard.public_key != guard.public_key or key.vault != config.get("id"):
        raise AuthError(f"guard key {path} (key {key.guard.fingerprint}, vault {key.vault}) is not the guard of "
                        f"vault {config.get('id')} (guard {guard.fingerprint}); nothing was signed")
    return guard


def check_can_add(config: dict[str, Any], where: str, holds_points: bool) -> None:
    """Refuse to give an unguarded vault that is immutable (``immutable_days`` > 0) and holds points (soft-deleted
    ones included) a guard: their protection is absolute, and a guard added by the operator alone would be a key
    the operator holds, able to approve lowering it. A guarded vault's guard may be replaced (with its approval); a
    vault that is not immutable, or holds no point yet (an Object Lock vault is immutable from ``vault init``),
    may get one."""
    days = int(config.get("immutable_days", 0))
    if of(config) is None and days > 0 and holds_points:
        raise ImmutableError(
            f"vault {where} is immutable ({days} days), holds points and has no guard: a guard cannot be added to "
            "it, since its holder could then approve lowering a protection that nobody can lower now; a guard must "
            "be set before the vault is made immutable or given its first point ('vault guard init' right after "
            "'vault init'); nothing was changed")


def holds_points(vault: "Vault") -> bool:
    """Whether the vault holds a point, visible or soft-deleted (on S3 the catalog follows the bucket at open)."""
    from . import protection, softdelete
    return bool(vault.catalog.points()) or bool(softdelete.scan(vault, protection.current(vault)))


def install(vault: "Vault", key: GuardKey) -> None:
    """Put ``key``'s public half in the vault's config (new MAC). The caller holds the points and gc locks, and
    checked ``check_can_add`` (or the current guard's approval of replacing it) before writing the key file."""
    from . import config as cfgmod
    from . import hoststate, protection
    if vault.sealer.keys is None or int(vault.config["version"]) < 3:
        raise UsageError(f"vault {vault.where} is format v{vault.config['version']}, whose config is not "
                         "authenticated: it cannot hold a guard; create a new vault with 'cutpoint vault init'")
    current = protection.current_config(vault)
    check_can_add(current, vault.where, holds_points(vault))
    config = {k: v for k, v in current.items() if k != "mac"}
    config["guard"] = key.guard.to_config()
    validate(config, str(vault.root / "config.json"))
    protection.write_config(vault, cfgmod.seal(config, vault.sealer.keys))
    hoststate.guarded(vault.root, key.guard.fingerprint)
