"""The vault: one directory holding chunks, manifests, the catalog, the key file and locks (docs/design.md, 2).

Opening a vault checks its format version and, when it is encrypted, unlocks its key *before* anything else is
opened or written: a wrong passphrase or key file stops a command with nothing changed on disk.
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import faults
from ..catalog.db import Catalog, PointRecord
from ..names import check_vm_name
from ..errors import AuthError, IntegrityError, NotFoundError, UsageError, VaultError
from . import locks
from . import passphrase as pp
from .chunks import ChunkStore
from .crypto import Keys, Sealer, check_key_file, unwrap_keys, wrap_keys
from .fsutil import fsync_dir, write_atomic
from .manifest import MAGIC as MANIFEST_MAGIC
from .manifest import Manifest, manifest_path

VAULT_FORMAT = "cutpoint-vault"
VAULT_VERSION = 2
DEFAULT_CHUNK_SIZE = 4 << 20
KEY_FILE = "key.json"


class Vault:
    def __init__(self, root: Path, config: dict[str, Any], sealer: Sealer) -> None:
        self.root = root
        self.config = config
        self.sealer = sealer
        self.chunk_size = int(config["chunk_size"])
        self.chunks = ChunkStore(root / "chunks", sealer)
        self.catalog = Catalog(root / "catalog.sqlite")
        self.locks_dir = root / "locks"

    @property
    def encrypted(self) -> bool:
        return self.sealer.keys is not None

    @classmethod
    def open(cls, root: Path, *, create: bool = True, chunk_size: int = DEFAULT_CHUNK_SIZE,
             passphrase: pp.Source | None = None, key_file: Path | None = None) -> "Vault":
        """Open (or, with ``create``, create an unencrypted) vault; an encrypted one is unlocked first."""
        root = root.expanduser()
        if not (root / "config.json").exists():
            if not create:
                raise NotFoundError(f"{root} is not a cutpoint vault (no config.json); create it with a backup or "
                                    "'cutpoint vault init'")
            cls.create(root, chunk_size=chunk_size, exist_ok=True)
        config = read_config(root)
        if not os.access(root, os.W_OK):
            raise VaultError(f"vault directory {root} is not writable; fix its permissions or pass --vault DIR "
                             "(or set CUTPOINT_VAULT) to use another")
        keys = unlock(root, config, passphrase, key_file) if config.get("encryption") else None
        if keys is None:
            _refuse_downgrade(root)
        return cls(root, config, Sealer(keys))

    @staticmethod
    def create(root: Path, *, chunk_size: int = DEFAULT_CHUNK_SIZE, encrypt: bool = False,
               passphrase: pp.Source | None = None, exist_ok: bool = False) -> None:
        """Create a vault; the passphrase is asked for before anything is written, and config.json comes last."""
        root = root.expanduser()
        if (root / "config.json").exists():
            if exist_ok:
                return
            raise UsageError(f"{root} is already a cutpoint vault; choose another --vault DIR")
        keys = Keys.generate() if encrypt else None
        secret = (passphrase or pp.source())(f"the new vault {root}", True) if encrypt else b""
        vault_id = uuid.uuid4().hex
        config: dict[str, Any] = {
            "format": VAULT_FORMAT, "version": VAULT_VERSION, "id": vault_id, "chunk_size": chunk_size,
            "chunk_id": "hmac-sha256" if keys else "sha256", "compression": "zstd",
            "encryption": {"cipher": "aes-256-gcm", "kdf": "scrypt", "key_fingerprint": keys.fingerprint}
            if keys else None,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)      # private whatever the umask
            for sub in ("chunks", "points", "locks"):
                (root / sub).mkdir(mode=0o700, exist_ok=True)
            if keys:
                write_atomic(root / KEY_FILE, json.dumps(wrap_keys(keys, secret, vault_id), indent=1).encode())
            write_atomic(root / "config.json", json.dumps(config, indent=1).encode())
        except OSError as exc:
            raise VaultError(f"cannot create a vault in {root}: {exc.strerror or exc}; pass --vault DIR "
                             "(or set CUTPOINT_VAULT) to a writable directory") from exc

    def close(self) -> None:
        self.catalog.close()

    # -- points ------------------------------------------------------------------------------------------------------

    def commit_point(self, manifest: Manifest, summary: dict[str, object]) -> PointRecord:
        """Make a point visible: chunks durable, then the manifest, then the catalog row (docs/design.md)."""
        self.chunks.flush()
        faults.hit("after-chunks")
        path = manifest_path(self.root, manifest.vm, manifest.point)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(path, manifest.seal(self.sealer))
            fsync_dir(path.parent.parent)
        except OSError as exc:
            raise VaultError(f"cannot write manifest {path}: {exc.strerror or exc}") from exc
        faults.hit("after-manifest")
        rec = PointRecord(
            id=manifest.point, vm=manifest.vm, created=manifest.created, consistency=manifest.consistency,
            mode=manifest.mode, pause_ms=manifest.pause_ms, logical_bytes=sum(d.size for d in manifest.disks),
            read_bytes=sum(d.read_bytes for d in manifest.disks),
            stored_bytes=sum(d.stored_bytes for d in manifest.disks),
            manifest=str(path.relative_to(self.root)), summary=summary)
        self.catalog.add_point(rec)
        return rec

    def manifest(self, rec: PointRecord) -> Manifest:
        """The authenticated manifest of a catalog row; any mismatch between the two raises ``IntegrityError``."""
        if rec.damaged:
            raise IntegrityError(f"catalog row of point {rec.id} is damaged: {rec.damaged}")
        expect = str(manifest_path(self.root, rec.vm, rec.id).relative_to(self.root))
        if rec.manifest != expect:
            raise IntegrityError(f"catalog row of point {rec.id} is damaged: it names manifest {rec.manifest!r}, "
                                 f"expected {expect!r}")
        path = self.root / rec.manifest
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"manifest of point {rec.id} is missing ({path})") from None
        except OSError as exc:
            raise IntegrityError(f"manifest of point {rec.id} cannot be read: {exc.strerror or exc}") from exc
        m = Manifest.unseal(self.sealer, data, rec.vm, rec.id, f"manifest of point {rec.id}")
        if sum(d.size for d in m.disks) != rec.logical_bytes:
            raise IntegrityError(f"catalog row of point {rec.id} is damaged: {rec.logical_bytes} bytes, its "
                                 f"manifest {sum(d.size for d in m.disks)}")
        return m

    def parent_for(self, rec: PointRecord) -> tuple[Manifest | None, str | None]:
        """The manifest an incremental may build on, or None and why not (failed verification, unreadable)."""
        v = self.catalog.verified(rec.id)
        if v is not None and v.state == "failed":
            return None, "previous point failed verification"
        try:
            return self.manifest(rec), None
        except IntegrityError as exc:
            return None, f"previous point is unreadable ({exc})"

    # -- locks (table in docs/design.md) -----------------------------------------------------------------------------

    @contextmanager
    def vm_lock(self, vm: str, *, writer: bool = True) -> Iterator[None]:
        """Held for a whole backup (or prune) of one VM; a backup also registers as a running writer for gc."""
        check_vm_name(vm)               # backup, prune and cleanup pass here: a hostile catalog row is no path
        with locks.hold(self.locks_dir / f"vm-{vm}.lock", f"VM {vm!r}"):
            with locks.register_writer(self.locks_dir, f"backup {vm}") if writer else nullcontext():
                yield

    def points_lock(self, *, shared: bool) -> Any:
        """Exclusive for prune; shared for restore, verify and gc, which must not see points vanish mid-way."""
        return locks.hold(self.locks_dir / "prune.lock", "the vault's points", shared=shared)

    def pin(self, point_id: str) -> Any:
        """Held (shared) for as long as a point is served (mount, file view, instant restore): prune keeps a pinned
        point, with the reason, instead of being refused for the whole vault while a VM runs from one of its points.
        Take it while holding ``points_lock(shared=True)``, so that no prune is deciding at that moment."""
        return locks.hold(self.pin_path(point_id), f"point {point_id}", shared=True)

    def pin_path(self, point_id: str) -> Path:
        return self.locks_dir / f"pin-{point_id}.lock"

    def gc_lock(self) -> Any:
        return locks.hold(self.locks_dir / "gc.lock", "garbage collection")


def read_config(root: Path) -> dict[str, Any]:
    """``config.json``, checked for format and version; needs no passphrase."""
    cfg_path = root / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        raise NotFoundError(f"{root} is not a cutpoint vault (no config.json); create one with 'cutpoint vault init "
                            f"--vault {root}'") from None
    except (OSError, ValueError) as exc:
        raise VaultError(f"cannot read vault config {cfg_path}: {exc}") from exc
    if config.get("format") != VAULT_FORMAT:
        raise VaultError(f"{root} is not a cutpoint vault (config format {config.get('format')!r})")
    if config.get("version") == 1:
        raise VaultError(f"{root} is a vault of format v1 (a development build); this cutpoint reads v2 only and "
                         "does not convert it: create a new vault with 'cutpoint vault init --vault NEWDIR'")
    if config.get("version") != VAULT_VERSION:
        raise VaultError(f"{root} holds vault format v{config.get('version')}; this cutpoint reads "
                         f"{VAULT_FORMAT} v{VAULT_VERSION}")
    if not config.get("encryption") and (root / KEY_FILE).exists():
        raise IntegrityError(f"{cfg_path} says the vault is unencrypted but it has a key file: config.json was "
                             "altered; restore it from a copy")
    return config


def _refuse_downgrade(root: Path) -> None:
    """An unencrypted config over encrypted manifests means config.json (and key.json) were altered: writing on
    would store plaintext chunks beside encrypted ones. A few manifests' headers tell: magic, scheme 1 (AES-GCM) and
    a key fingerprint, all three: one damaged byte is not mistaken for it (verify reports that)."""
    for path in itertools.islice(root.glob("points/*/*.manifest"), 3):
        try:
            with open(path, "rb") as f:
                head = f.read(21)
        except OSError:
            continue
        if len(head) == 21 and head[:4] == MANIFEST_MAGIC and head[4] == 1 and any(head[5:]):
            raise IntegrityError(f"{root / 'config.json'} says the vault is unencrypted but its points are "
                                 f"encrypted ({path.name}): config.json was altered; restore config.json from a "
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
    if doc["fingerprint"] != want or doc["vault"] != config["id"]:
        raise AuthError(f"key file {path} belongs to another vault (key {doc['fingerprint']}); vault {root} needs "
                        f"key {want}")


def unlock(root: Path, config: dict[str, Any], passphrase: pp.Source | None, key_file: Path | None) -> Keys:
    path = key_file_path(root, key_file)
    doc = load_key_file(path)
    check_belongs(doc, config, path, root)
    secret = (passphrase or pp.source())(f"vault {root}", False)
    return unwrap_keys(doc, secret, str(path))


def export_key(vault: Vault, to: Path, key_file: Path | None = None) -> Path:
    """Copy the (passphrase-protected) key file that unlocked ``vault`` to ``to``; never overwrites."""
    if not vault.encrypted:
        raise UsageError(f"vault {vault.root} is not encrypted: it has no key to export")
    to = to.expanduser()
    if to.exists():
        raise UsageError(f"{to} already exists; choose another --to FILE")
    data = key_file_path(vault.root, key_file).read_bytes()
    try:
        write_atomic(to, data)          # mkstemp: mode 0600
    except OSError as exc:
        raise VaultError(f"cannot write {to}: {exc.strerror or exc}") from exc
    return to


def import_key(root: Path, src: Path, passphrase: pp.Source | None = None) -> str:
    """Install ``src`` as the vault's key file after proving it is this vault's key and the passphrase opens it."""
    root = root.expanduser()
    config = read_config(root)
    if not config.get("encryption"):
        raise UsageError(f"vault {root} is not encrypted: it takes no key")
    src = src.expanduser()
    doc = load_key_file(src)
    check_belongs(doc, config, src, root)
    unwrap_keys(doc, (passphrase or pp.source())(f"key file {src}", False), str(src))
    try:
        write_atomic(root / KEY_FILE, src.read_bytes())
    except OSError as exc:
        raise VaultError(f"cannot write {root / KEY_FILE}: {exc.strerror or exc}") from exc
    return str(doc["fingerprint"])
