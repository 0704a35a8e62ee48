"""Keys, the key file, and the sealed-blob format shared by chunks and manifests.

An encrypted vault has two random 256-bit keys: ``enc`` (AES-256-GCM for every chunk and manifest) and ``ids``
(HMAC-SHA256 chunk ids, so an id says nothing about content to someone without the key, and cannot be confirmed by
hashing a guessed disk block). Both live in a *key file* wrapped by a key derived from a passphrase with scrypt; the
passphrase never touches data directly, so it can be changed or a key file exported without re-encrypting anything.
The *fingerprint* names the key without revealing it; it is in ``config.json``, the key file, and the header of
every chunk and manifest, so a blob written with another key is recognised as such, not as garbage.

A sealed blob (format in docs/format.md §4)::

    magic(4) scheme(1) fingerprint(16) body
    scheme 0 (plain, format v2 only): sha256(header, aad, payload)(32) payload
    scheme 1 (aes-256-gcm):           nonce(12) AESGCM(payload, associated data = header + aad)
    scheme 2 (hmac-sha256, v3):       HMAC-SHA256(mac key; header, aad, payload)(32) payload

``aad`` binds a blob to its name (a chunk's id, a manifest's ``vm/point``): a blob moved under another name fails its
check even though each file is intact. Scheme 0 is an unkeyed checksum: it catches damage, not forgery (anyone can
recompute it), so format v3 never writes it. An unencrypted v3 vault has an *authentication key* (the same two
256-bit halves as ``Keys``: ``enc`` is the MAC key, ``ids`` the chunk-id key) that lives outside the vault, in the
host's state directory; whoever can write the vault but lacks that key can neither re-seal a blob nor make a chunk
id for content of their choosing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..errors import AuthError, IntegrityError, VaultError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEYFILE_FORMAT = "cutpoint-key"
KEYFILE_VERSION = 2              # 2: the vault's config.json is MAC'd (format v3); 1: format v2, no config MAC
KEYFILE_VERSIONS = (1, 2)
AUTHKEY_FORMAT = "cutpoint-auth-key"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 17, 8, 1      # OWASP's minimum for scrypt: ~0.5 s and 128 MiB per unlock
SCHEME_PLAIN, SCHEME_AESGCM, SCHEME_HMAC, SCHEME_KEYED_ID = 0, 1, 2, 3
HEADER = struct.Struct("4sB16s")
NO_KEY = bytes(16)

# ``cryptography`` is imported where AES-GCM or scrypt is used, not here: it costs ~35 ms to import, and an
# unencrypted vault (HMAC and keyed BLAKE3 only, from hashlib and blake3) never needs it.


def _aesgcm(key: bytes) -> AESGCM:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    return AESGCM(key)


@dataclass(frozen=True)
class Keys:
    enc: bytes
    ids: bytes

    @classmethod
    def generate(cls) -> "Keys":
        return cls(os.urandom(32), os.urandom(32))

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(b"cutpoint-key-fingerprint\0" + self.enc + self.ids).hexdigest()[:32]


class Sealer:
    """Chunk ids and sealing for one vault: ``keys=None`` is a v2 unencrypted vault (sha256 ids, checksummed blobs);
    keys with ``encrypt`` AES-256-GCM; keys without it (an unencrypted v3 vault) HMAC-sealed plaintext."""

    def __init__(self, keys: Keys | None, *, encrypt: bool = True) -> None:
        self.keys = keys
        self.encrypted = keys is not None and encrypt
        self.fingerprint = keys.fingerprint if keys else None
        self._fp = bytes.fromhex(self.fingerprint) if self.fingerprint else NO_KEY
        self._aead = _aesgcm(keys.enc) if keys and encrypt else None
        self._scheme = SCHEME_PLAIN if keys is None else SCHEME_AESGCM if encrypt else SCHEME_HMAC

    def chunk_id(self, data: bytes) -> str:
        if self.keys is None:
            return hashlib.sha256(data).hexdigest()
        return hmac.new(self.keys.ids, data, hashlib.sha256).hexdigest()

    def blob_key(self, kind: int) -> bytes:
        """The BLAKE3 key of a format v4 content id of ``kind`` (data or index node): derived from the id key, one
        per kind, so that a node and a chunk with the same bytes never share an id."""
        if self.keys is None:
            raise VaultError("a format v4 vault needs keys (it has none: config.json or the key was altered)")
        return hmac.new(self.keys.ids, b"cutpoint-blake3-id\0" + bytes([kind]), hashlib.sha256).digest()

    def seal_blob_parts(self, magic: bytes, codec: bytes, body: bytes | memoryview,
                        aad: bytes) -> tuple[bytes | memoryview, ...]:
        """A format v4 pack blob of payload ``codec + body``, as pieces to copy one after another into a pack.
        Encrypted: as ``seal``. Unencrypted: no MAC (scheme 3); the blob's keyed content id, checked after decoding,
        authenticates it, so each byte is hashed once on the way in and once on the way out. The body is then one of
        the pieces as it is (a view stays a view), so a chunk is copied once, into the pack."""
        if self._aead is not None:
            return (self.seal(magic, codec + bytes(body), aad),)
        return HEADER.pack(magic, SCHEME_KEYED_ID, self._fp) + codec, body

    def unseal_blob(self, magic: bytes, blob: bytes | memoryview, aad: bytes, what: str) -> bytes | memoryview:
        """The payload of a v4 blob. Unencrypted it is not yet authenticated: the caller checks the content id of
        what it decodes (and decodes with a bound)."""
        if self._aead is not None:
            return self.unseal(magic, bytes(blob), aad, what)
        if len(blob) < HEADER.size:
            raise IntegrityError(f"{what} is damaged: truncated to {len(blob)} bytes")
        got_magic, scheme, fp = HEADER.unpack_from(blob)
        if got_magic != magic or scheme != SCHEME_KEYED_ID:
            raise IntegrityError(f"{what} is damaged or forged: bad header (magic {bytes(got_magic)!r}, "
                                 f"scheme {scheme})")
        if fp != self._fp:
            raise IntegrityError(f"{what} was written with key {fp.hex()}, not this vault's key {self.fingerprint}")
        return memoryview(blob)[HEADER.size:]

    def seal(self, magic: bytes, payload: bytes, aad: bytes) -> bytes:
        header = HEADER.pack(magic, self._scheme, self._fp)
        if self._aead is not None:
            nonce = os.urandom(12)
            return header + nonce + self._aead.encrypt(nonce, payload, header + aad)
        return b"".join((header, self._tag(header, aad, payload), payload))

    def _tag(self, header: bytes, aad: bytes, payload: bytes | memoryview) -> bytes:
        if self.keys is None:
            return _checksum(header, aad, payload)
        h = hmac.new(self.keys.enc, header, hashlib.sha256)
        h.update(aad)
        h.update(payload)
        return h.digest()

    def unseal(self, magic: bytes, blob: bytes, aad: bytes, what: str) -> bytes:
        """The payload of ``blob``, authenticated; anything else raises ``IntegrityError`` naming ``what``."""
        if len(blob) < HEADER.size:
            raise IntegrityError(f"{what} is damaged: truncated to {len(blob)} bytes")
        got_magic, scheme, fp = HEADER.unpack_from(blob)
        if got_magic != magic:
            raise IntegrityError(f"{what} is damaged: bad header")
        view = memoryview(blob)          # no copies of a 4 MiB body on the restore path
        body = view[HEADER.size:]
        header = blob[:HEADER.size]
        if scheme != self._scheme:
            if scheme in _SCHEMES:
                raise IntegrityError(f"{what} is {_SCHEMES[scheme]}, which does not match this vault "
                                     f"({_SCHEMES[self._scheme]}): forged, or from another vault")
            raise IntegrityError(f"{what} is damaged: unknown scheme {scheme}")
        if scheme != SCHEME_PLAIN and fp != self._fp:
            raise IntegrityError(f"{what} was written with key {fp.hex()}, not this vault's key {self.fingerprint}")
        if self._aead is not None:
            from cryptography.exceptions import InvalidTag
            try:
                return self._aead.decrypt(bytes(body[:12]), bytes(body[12:]), header + aad)
            except InvalidTag:
                raise IntegrityError(f"{what} is damaged: authentication failed (altered, truncated or "
                                     "misplaced)") from None
        if len(body) < 32 or not hmac.compare_digest(body[:32], self._tag(header, aad, body[32:])):
            kind = "checksum mismatch" if self.keys is None else "authentication failed"
            raise IntegrityError(f"{what} is damaged: {kind} (truncated, altered or misplaced)")
        return bytes(body[32:])


_SCHEMES = {SCHEME_PLAIN: "sealed with an unkeyed checksum", SCHEME_AESGCM: "encrypted",
            SCHEME_HMAC: "authenticated but not encrypted",
            SCHEME_KEYED_ID: "checked by its keyed content id"}


def config_mac(keys: Keys, canonical: bytes) -> str:
    """The MAC of a vault's canonical config under a key derived from the vault's (or authentication) key."""
    k = hmac.new(keys.ids, b"cutpoint-config-mac\0", hashlib.sha256).digest()
    return hmac.new(k, canonical, hashlib.sha256).hexdigest()


def _checksum(header: bytes, aad: bytes, payload: bytes | memoryview) -> bytes:
    h = hashlib.sha256(header)
    h.update(aad)
    h.update(payload)
    return h.digest()


# -- the key file ----------------------------------------------------------------------------------------------------

def _kdf(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _aad(vault_id: str, fingerprint: str, version: int = KEYFILE_VERSION) -> bytes:
    """The key file's version is authenticated: a v2 key file (its vault's config is MAC'd) cannot be passed off
    as a v1 one to skip that check."""
    return f"{KEYFILE_FORMAT} v{version} {vault_id} {fingerprint}".encode()


def wrap_keys(keys: Keys, passphrase: bytes, vault_id: str) -> dict[str, Any]:
    """A key file (JSON-able) holding ``keys`` encrypted under a key derived from ``passphrase``."""
    salt, nonce = os.urandom(16), os.urandom(12)
    kek = _kdf(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    sealed = _aesgcm(kek).encrypt(nonce, keys.enc + keys.ids, _aad(vault_id, keys.fingerprint))
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return {"format": KEYFILE_FORMAT, "version": KEYFILE_VERSION, "vault": vault_id,
            "fingerprint": keys.fingerprint, "cipher": "aes-256-gcm",
            "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": b64(salt)},
            "nonce": b64(nonce), "keys": b64(sealed),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def check_key_file(doc: object, where: str) -> dict[str, Any]:
    """Shape check of a parsed key file, before any passphrase is asked for."""
    if not isinstance(doc, dict) or doc.get("format") != KEYFILE_FORMAT:
        raise VaultError(f"{where} is not a cutpoint key file")
    if doc.get("version") not in KEYFILE_VERSIONS:
        raise VaultError(f"{where} is a key file of version {doc.get('version')}; this cutpoint reads "
                         f"versions {', '.join(map(str, KEYFILE_VERSIONS))}")
    kdf = doc.get("kdf")
    if (not isinstance(kdf, dict) or kdf.get("name") != "scrypt"
            or not all(isinstance(doc.get(k), str) for k in ("vault", "fingerprint", "nonce", "keys"))):
        raise VaultError(f"key file {where} is damaged: fields missing; import an exported copy with "
                         "'cutpoint vault key import FILE'")
    return doc


def unwrap_keys(doc: dict[str, Any], passphrase: bytes, where: str) -> Keys:
    """The keys of a key file; a wrong passphrase raises ``AuthError``, a damaged file ``VaultError``."""
    kdf = doc["kdf"]
    try:
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        if not (1 < n <= 1 << 20 and 0 < r <= 32 and 0 < p <= 16 and 128 * n * r <= 1 << 30):
            raise ValueError(f"scrypt parameters n={n} r={r} p={p} are out of range (at most 1 GiB of memory)")
        kek = _kdf(passphrase, base64.b64decode(kdf["salt"]), n, r, p)
        nonce, sealed = base64.b64decode(doc["nonce"]), base64.b64decode(doc["keys"])
    except (KeyError, ValueError, TypeError) as exc:
        raise VaultError(f"key file {where} is damaged: {exc}") from exc
    from cryptography.exceptions import InvalidTag
    try:
        raw = _aesgcm(kek).decrypt(nonce, sealed, _aad(doc["vault"], doc["fingerprint"], int(doc["version"])))
    except InvalidTag:
        raise AuthError(f"wrong passphrase for key file {where} (or the key file is damaged); check "
                        "--passphrase-file / CUTPOINT_PASSPHRASE") from None
    keys = Keys(raw[:32], raw[32:])
    if len(raw) != 64 or keys.fingerprint != doc["fingerprint"]:
        raise VaultError(f"key file {where} is damaged: its keys do not match its fingerprint")
    return keys


# -- the authentication key of an unencrypted vault (kept in the host's state directory, never in the vault) --------

def auth_key_doc(keys: Keys, vault_id: str, copies: list[str] | None = None) -> dict[str, Any]:
    """The file form of an unencrypted vault's authentication key: not passphrase-protected (it guards integrity,
    not secrecy); its protection is where it lives (a root-only 0700 directory) and who gets an export.
    ``copies``: ids of further vaults made with the same key ('vault init --copy-of', docs/format.md §22)."""
    doc: dict[str, Any] = {"format": AUTHKEY_FORMAT, "version": 1, "vault": vault_id,
                           "fingerprint": keys.fingerprint, "keys": base64.b64encode(keys.enc + keys.ids).decode(),
                           "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if copies:
        doc["copies"] = sorted(set(copies))
    return doc


def auth_key_copies(doc: dict[str, Any], where: str) -> list[str]:
    """The ids of the copies sharing an authentication key (absent: none)."""
    got = doc.get("copies", [])
    if not isinstance(got, list) or not all(isinstance(v, str) and len(v) <= 64 for v in got):
        raise VaultError(f"authentication key file {where} is damaged: 'copies' is not a list of vault ids")
    return list(got)


def auth_key_from(doc: object, where: str) -> tuple[Keys, str]:
    """(keys, vault id) of an authentication key file; anything malformed raises ``VaultError``."""
    if not isinstance(doc, dict) or doc.get("format") != AUTHKEY_FORMAT or doc.get("version") != 1:
        raise VaultError(f"{where} is not a cutpoint authentication key file")
    try:
        raw = base64.b64decode(doc["keys"], validate=True)
        keys = Keys(raw[:32], raw[32:])
        if len(raw) != 64 or keys.fingerprint != doc["fingerprint"] or not isinstance(doc["vault"], str):
            raise ValueError("its keys do not match its fingerprint")
    except (KeyError, ValueError, TypeError) as exc:
        raise VaultError(f"authentication key file {where} is damaged: {exc}") from exc
    return keys, doc["vault"]
