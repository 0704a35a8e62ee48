"""The vault: one directory holding chunks, manifests, the catalog, the key file and locks (docs/format.md).

Opening a vault checks its format version and, when it is encrypted, unlocks its key *before* anything else is
opened or written: a wrong passphrase or key file stops a command with nothing changed on disk.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import faults
from ..catalog.db import Catalog, PointRecord
from ..names import check_vm_name
from ..errors import IntegrityError, LockedError, NotFoundError, UsageError, VaultError
from . import config as cfgmod
from . import guard
from . import hoststate
from . import keyfile
from .keyfile import KEY_FILE
from . import locks
from . import location
from . import objlocks
from . import passphrase as pp
from . import remote
from .backend import Backend
from .chunks import ChunkStore
from .config import DEFAULT_CHUNK_SIZE, PACKED_VERSION, VAULT_FORMAT, VAULT_VERSION, read_config
from .crypto import Keys, Sealer, wrap_keys
from .fsutil import fsync_dir, write_atomic
from .manifest import FORMAT, FORMAT_DELTA, TREE_FORMATS, Manifest, manifest_path
from .packstore import DEFAULT_PACK_SIZE, PackStore
from .protection import Protection
from .tree import DEFAULT_FANOUT, ChunkTree

__all__ = ["VAULT_FORMAT", "VAULT_VERSION", "DEFAULT_CHUNK_SIZE", "KEY_FILE", "Vault", "read_config"]

log = logging.getLogger(__name__)
V3_CHUNK_SIZE = 4 << 20
LOCK_WAIT = 1800.0                  # S3: seconds a backup or restore waits for a gc or prune to release the vault
UPLOADS = 4                         # S3: packs uploading at once while the next ones fill (docs/performance.md)
LOCAL_WRITES = 1                    # a directory: a pack written in the background, so the workers that fill the
#                                     next one never wait on the device (engine case: 790 -> 925-985 MiB/s); one at a
#                                     time is enough at 1 GB/s and keeps two 16 MiB buffers, not three (fresh memory
#                                     is slow here: ratio to the limit 0.67 -> 0.77 median, 6 runs each, alternating)


class Vault:
    def __init__(self, root: Path, config: dict[str, Any], sealer: Sealer) -> None:
        self.root = root
        self.config = config
        self.sealer = sealer
        self.chunk_size = int(config["chunk_size"])
        # v3: the chunk size is authenticated and never changes, so no chunk can be larger; a v2 config is not
        # authenticated (an edit could shrink it under older points): bounded by the largest chunk size there is
        bound = self.chunk_size if int(config["version"]) >= 3 else cfgmod.MAX_CHUNK_SIZE
        self.locks_dir = root / "locks"
        self.packed = int(config["version"]) >= PACKED_VERSION
        self.fanout = int(config.get("tree_fanout") or 0)
        self.chunks: ChunkStore | PackStore
        self.remote = location.remote_of(root)            # an S3 vault: root is this host's directory for it
        self.where = self.remote.url if self.remote is not None else str(root)   # how messages name the vault
        self.backend: Backend = location.backend_for(root, location.retention_of(config) if self.remote else None)
        self._objlock: objlocks.HeldLock | None = None     # S3 vaults: the lock object this process holds
        if self.packed:
            self.chunks = PackStore(self.backend, sealer, self.locks_dir, max_size=bound,
                                    pack_size=int(config["pack_size"]), uploads=UPLOADS if self.remote else LOCAL_WRITES)
        else:
            self.chunks = ChunkStore(root / "chunks", sealer, max_size=bound)
        self.catalog = Catalog(root / "catalog.sqlite")
        self.finding: hoststate.Finding | None = None     # what this host's memory says is wrong with the vault

    @property
    def encrypted(self) -> bool:
        return self.sealer.encrypted

    @classmethod
    def open(cls, root: Path, *, create: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE,
             passphrase: pp.Source | None = None, key_file: Path | None = None,
             accept_change: bool = False, warn: bool = True) -> "Vault":
        """Open an existing vault: config authenticated (v3), key unlocked, then compared with what this host
        remembers of it. Never creates one (``create`` and ``chunk_size`` are accepted for old callers and ignored:
        creating is 'cutpoint vault init''s job). ``accept_change`` is 'vault trust': record it as it is now.
        A finding of this host's memory is logged as a warning (``warn``) and refused by ``require_trusted``."""
        del create, chunk_size
        root = root.expanduser()
        remote.fetch_meta(root)                     # S3: this host's copies of config.json and key.json, fresh
        config = read_config(root)
        if not os.access(root, os.W_OK):
            raise VaultError(f"vault directory {root} is not writable; fix its permissions or pass --vault DIR "
                             "(or set CUTPOINT_VAULT) to use another")
        sealer = keyfile.sealer_for(root, config, passphrase, key_file)
        cfgmod.validate(config, root)
        vault = cls(root, config, sealer)
        try:
            if vault.remote is not None:
                remote.sync_catalog(vault)          # the bucket's manifests are the points; the catalog follows
            g = guard.of(config)
            seen = hoststate.Seen(config["id"], cfgmod.fingerprint(config), vault.encrypted,
                                  {vm: pts[-1].id for vm, pts in _by_vm(vault.catalog.points()).items()},
                                  g.fingerprint if g else None)
            if accept_change:
                hoststate.trust(root, seen)
                return vault
            vault.finding = hoststate.check(root, seen, lambda vm: [p.id for p in vault.catalog.points(vm)])
            if vault.finding is not None:
                if vault.finding.kind == "downgraded":
                    raise hoststate.VaultChangedError(vault.finding.message(root))
                if warn:
                    log.warning("%s (reading on; writes are refused)", vault.finding.message(root))
        except BaseException:
            vault.close()
            raise
        return vault

    def require_trusted(self, what: str) -> None:
        """Writes (backup, prune, gc) go only into a vault this host's memory agrees with."""
        if self.finding is not None:
            raise hoststate.VaultChangedError(f"{what} refused: {self.finding.message(self.root)}")

    @staticmethod
    def create(root: Path, *, chunk_size: int | None = None, encrypt: bool = False,
               passphrase: pp.Source | None = None, exist_ok: bool = False, version: int = VAULT_VERSION,
               protection: Protection = Protection(), object_lock: str | None = None,
               copy_of: "Vault | None" = None, pack_size: int = DEFAULT_PACK_SIZE) -> None:
        """Create a vault of format v4 (``version=3`` makes the previous format, for compatibility tests); the
        passphrase is asked for before anything is written, and config.json comes last. Unencrypted, it still gets
        an authentication key, kept in this host's state directory. ``protection``: none unless asked ('vault
        init' asks for 14 days of soft delete). ``copy_of``: a copy target of that (open) vault, which 'cutpoint
        copy' fills with blobs as stored: its keys, encryption, chunk size, pack size and fanout, its own id
        (docs/format.md §22)."""
        fanout = DEFAULT_FANOUT
        if copy_of is not None:
            if not copy_of.packed or copy_of.sealer.keys is None:
                raise UsageError(f"vault {location.describe(copy_of.root)} is format v{copy_of.config['version']}; "
                                 "only a format v4 vault can be copied (back it up into a new vault instead)")
            if encrypt != copy_of.encrypted:
                raise UsageError(f"vault {location.describe(copy_of.root)} is "
                                 f"{'encrypted' if copy_of.encrypted else 'not encrypted'}, and its copy must be "
                                 f"too (blobs travel as stored): {'drop --no-encrypt' if copy_of.encrypted else 'add --no-encrypt'}; "
                                 "nothing was created")
            if chunk_size not in (None, copy_of.chunk_size):
                raise UsageError(f"--chunk-size: a copy of {location.describe(copy_of.root)} has its chunks of "
                                 f"{copy_of.chunk_size} bytes; drop --chunk-size; nothing was created")
            chunk_size, pack_size, fanout = copy_of.chunk_size, int(copy_of.config["pack_size"]), copy_of.fanout
        if version not in (3, PACKED_VERSION):
            raise UsageError(f"cannot create a vault of format v{version}; this cutpoint creates v3 and v4")
        if chunk_size is None:
            chunk_size = DEFAULT_CHUNK_SIZE if version >= PACKED_VERSION else V3_CHUNK_SIZE
        root = root.expanduser()
        on_s3 = location.remote_of(root) is not None
        if on_s3 and version != PACKED_VERSION:
            raise UsageError(f"a vault on S3 is format v{PACKED_VERSION}; v{version} vaults are local only")
        if location.backend_for(root).exists("config.json") if on_s3 else (root / "config.json").exists():
            if exist_ok:
                return
            raise UsageError(f"{location.describe(root)} is already a cutpoint vault; choose another --vault")
        try:
            cfgmod.check_chunk_size(chunk_size, "--chunk-size")
        except VaultError as exc:
            raise UsageError(str(exc)) from None
        keys = copy_of.sealer.keys if copy_of is not None and copy_of.sealer.keys is not None else Keys.generate()
        secret = (passphrase or pp.source())(f"the new vault {root}", True) if encrypt else b""
        vault_id = uuid.uuid4().hex
        config: dict[str, Any] = {
            "format": VAULT_FORMAT, "version": version, "id": vault_id, "chunk_size": chunk_size,
            "chunk_id": "blake3-keyed" if version >= PACKED_VERSION else "hmac-sha256", "compression": "zstd",
            "encryption": {"cipher": "aes-256-gcm", "kdf": "scrypt", "key_fingerprint": keys.fingerprint}
            if encrypt else None,
            "authentication": {"mac": "hmac-sha256", "key_fingerprint": keys.fingerprint,
                               "key": KEY_FILE if encrypt else "host state"},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **protection.to_config()}
        if object_lock is not None:
            if not on_s3 or protection.immutable_days <= 0 or object_lock not in ("compliance", "governance"):
                raise UsageError("--object-lock compliance|governance is for an S3 vault with --immutable-days N "
                                 "(N > 0): the retention it sets on every object is N days; nothing was created")
            remote.check_object_lock(root)
            config["object_lock"] = object_lock
        if version >= PACKED_VERSION:
            config.update(layout="packs", pack_size=pack_size, tree_fanout=fanout)
        if copy_of is not None:
            config["copy_of"] = copy_of.config["id"]
        try:
            if not encrypt:
                hoststate.save_auth_key(keys, vault_id)
            root.mkdir(mode=0o700, parents=True, exist_ok=True)      # private whatever the umask
            for sub in (("locks",) if on_s3 else ("data", "index", "points", "locks") if version >= PACKED_VERSION
                        else ("chunks", "points", "locks")):
                (root / sub).mkdir(mode=0o700, exist_ok=True)
            key_doc = json.dumps(wrap_keys(keys, secret, vault_id), indent=1).encode() if encrypt else None
            cfg_doc = json.dumps(cfgmod.seal(config, keys), indent=1).encode()
            if on_s3:
                remote.create_meta(root, cfg_doc, key_doc, location.retention_of(config))   # the bucket's: the vault
                for stale in root.glob("catalog.sqlite*"):     # this host's index of an earlier vault there
                    stale.unlink()
            if key_doc is not None:
                write_atomic(root / KEY_FILE, key_doc)
            write_atomic(root / "config.json", cfg_doc)
        except OSError as exc:
            raise VaultError(f"cannot create a vault in {root}: {exc.strerror or exc}; pass --vault DIR "
                             "(or set CUTPOINT_VAULT) to a writable directory") from exc
        hoststate.trust(root, hoststate.Seen(vault_id, keys.fingerprint, encrypt, {}))

    def close(self) -> None:
        if isinstance(self.chunks, PackStore):
            self.chunks.close()
        self.catalog.close()

    # -- points ------------------------------------------------------------------------------------------------------

    def commit_point(self, manifest: Manifest, summary: dict[str, object]) -> PointRecord:
        """Make a point visible: chunks durable, then the manifest, then the catalog row (docs/format.md §12)."""
        self.require_trusted(f"committing point {manifest.point}")
        if not (manifest.format in TREE_FORMATS if self.packed else manifest.format == FORMAT):
            raise VaultError(f"point {manifest.point} has manifest format {manifest.format}, which a format "
                             f"v{self.config['version']} vault does not hold; nothing was committed")
        self.chunks.flush()
        faults.hit("after-chunks")
        path = self.write_manifest(manifest.vm, manifest.point, manifest.seal(self.sealer))
        faults.hit("after-manifest")
        rec = PointRecord(
            id=manifest.point, vm=manifest.vm, created=manifest.created, consistency=manifest.consistency,
            mode=manifest.mode, pause_ms=manifest.pause_ms, logical_bytes=sum(d.size for d in manifest.disks),
            read_bytes=sum(d.read_bytes for d in manifest.disks),
            stored_bytes=sum(d.stored_bytes for d in manifest.disks),
            manifest=str(path.relative_to(self.root)), summary=summary)
        self.catalog.add_point(rec)
        hoststate.committed(self.root, manifest.vm, manifest.point)
        return rec

    def write_manifest(self, vm: str, point: str, sealed: bytes) -> Path:
        """Write a sealed manifest durably (the commit point on S3); its blobs must be durable and indexed."""
        path = manifest_path(self.root, vm, point)
        self.check_lock()                        # S3: a lock not refreshed in time no longer protects this commit
        try:
            if self.remote is not None:
                self.backend.put(str(path.relative_to(self.root)), sealed)
                self.backend.sync()
            else:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                write_atomic(path, sealed)
                fsync_dir(path.parent.parent)
        except OSError as exc:
            raise VaultError(f"cannot write manifest {path}: {exc.strerror or exc}") from exc
        return path

    def manifest(self, rec: PointRecord, *, at: Path | None = None) -> Manifest:
        """The authenticated manifest of a catalog row; any mismatch between the two raises ``IntegrityError``.
        ``at``: read it from there (a soft-deleted point's, in ``deleted/``) instead of the row's path."""
        if rec.damaged:
            raise IntegrityError(f"catalog row of point {rec.id} is damaged: {rec.damaged}")
        expect = str(manifest_path(self.root, rec.vm, rec.id).relative_to(self.root))
        if rec.manifest != expect:
            raise IntegrityError(f"catalog row of point {rec.id} is damaged: it names manifest {rec.manifest!r}, "
                                 f"expected {expect!r}")
        path = at or self.root / rec.manifest
        try:
            data = self.backend.get(str(path.relative_to(self.root))) if self.remote is not None \
                else path.read_bytes()
        except (FileNotFoundError, NotFoundError):
            raise IntegrityError(f"manifest of point {rec.id} is missing ({path})") from None
        except OSError as exc:
            raise IntegrityError(f"manifest of point {rec.id} cannot be read: {exc.strerror or exc}") from exc
        m = Manifest.unseal(self.sealer, data, rec.vm, rec.id, f"manifest of point {rec.id}")
        if not (m.format in TREE_FORMATS if self.packed else m.format == FORMAT):
            raise IntegrityError(f"manifest of point {rec.id} has format {m.format}, which a format "
                                 f"v{self.config['version']} vault does not hold (forged or misplaced)")
        if self.packed:
            if m.chunk_size != self.chunk_size or m.fanout != self.fanout:
                raise IntegrityError(f"manifest of point {rec.id} is damaged: chunks of {m.chunk_size} bytes and "
                                     f"index nodes of {m.fanout}, the vault {self.chunk_size} and {self.fanout}")
            assert isinstance(self.chunks, PackStore)
            for d in m.disks:
                d.chunks = ChunkTree(self.chunks, bytes.fromhex(d.tree) if d.tree else None, d.tree_height,
                                     -(-d.size // m.chunk_size), m.fanout, deltas=m.format == FORMAT_DELTA)
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

    # -- locks (table in docs/format.md §16) -----------------------------------------------------------------------------

    @contextmanager
    def vm_lock(self, vm: str, *, writer: bool = True) -> Iterator[None]:
        """Held for a whole backup (or prune) of one VM; a backup also registers as a running writer for gc."""
        check_vm_name(vm)               # backup, prune and cleanup pass here: a hostile catalog row is no path
        with locks.hold(self.locks_dir / f"vm-{vm}.lock", f"VM {vm!r}"), \
                self.object_lock("shared" if writer else "exclusive", f"{'backup' if writer else 'prune'} {vm}"):
            with locks.register_writer(self.locks_dir, f"backup {vm}") if writer else nullcontext() as w:
                if isinstance(self.chunks, PackStore) and w is not None:
                    self.chunks.begin_writer(w.path)
                try:
                    yield
                finally:
                    if isinstance(self.chunks, PackStore):
                        self.chunks.begin_writer(None)

    def points_lock(self, *, shared: bool) -> Any:
        """Exclusive for prune; shared for restore, verify and gc, which must not see points vanish mid-way."""
        return _both(locks.hold(self.locks_dir / "prune.lock", "the vault's points", shared=shared),
                     self.object_lock("shared" if shared else "exclusive", "reading points" if shared else "prune"))

    @contextmanager
    def pin(self, point_id: str) -> Iterator[None]:
        """Held (shared) for as long as a point is served (mount, file view, instant restore): prune keeps a pinned
        point, with the reason, instead of being refused for the whole vault while a VM runs from one of its points.
        Take it while holding ``points_lock(shared=True)``, so that no prune is deciding at that moment. On S3 a pin
        object too, so that prune and delete on other hosts keep the point as well (format.md §20.4)."""
        with locks.hold(self.pin_path(point_id), f"point {point_id}", shared=True):
            if self.remote is None:
                yield
                return
            held = objlocks.pin(self.backend, point_id, f"cutpoint serving point {point_id}")
            try:
                yield
            finally:
                held.release()

    def served(self) -> Callable[[str], bool]:
        """Whether a point is pinned: here (its flock pin) or, on S3, by a live pin object of any host (listed once
        per call of ``served``; callers hold the exclusive points lock, so no new pin appears meanwhile)."""
        remote = objlocks.pinned(self.backend) if self.remote is not None else set()
        return lambda point_id: point_id in remote or locks.in_use(self.pin_path(point_id))

    def pin_path(self, point_id: str) -> Path:
        return self.locks_dir / f"pin-{point_id}.lock"

    def check_lock(self) -> None:
        """S3: raise ``LockedError`` unless the lock object this process holds still protects it (refreshed in
        time, still there, its own; ``objlocks.HeldLock.check``). Called before each step that commits or deletes:
        a process whose lock was lost, and whose vault another host may have taken, changes nothing more. A local
        vault's flocks cannot be lost: nothing to check."""
        if self._objlock is not None:
            self._objlock.check()

    def gc_lock(self) -> Any:
        return _both(locks.hold(self.locks_dir / "gc.lock", "garbage collection"), self.object_lock("exclusive", "gc"))

    @contextmanager
    def object_lock(self, kind: str, owner: str) -> Iterator[None]:
        """S3 vaults: a lock object, so that processes on other hosts see this one (docs/format.md §20.4).
        Nothing for a local vault (flock does it). Re-entrant: a process holding the exclusive lock, or a shared
        one when shared is asked, takes nothing more."""
        held = self._objlock
        if self.remote is None or (held is not None and (held.info.kind == "exclusive" or kind == "shared")):
            yield
            return
        lock = _acquire_waiting(self.backend, kind, f"cutpoint {owner}",
                                float(os.environ.get("CUTPOINT_LOCK_WAIT", LOCK_WAIT)) if kind == "shared" else 0.0)
        self._objlock = lock
        try:
            yield
        finally:
            self._objlock = held
            lock.release()


def _acquire_waiting(backend: Backend, kind: str, owner: str, wait: float) -> objlocks.HeldLock:
    """A lock object, retried for ``wait`` seconds while another holds the vault: a backup or a restore waits for
    a gc or prune on any host to finish (as restic's --retry-lock) instead of failing; gc and prune do not wait."""
    deadline = time.monotonic() + wait
    delay = 0.2
    while True:
        try:
            return objlocks.acquire(backend, kind, owner)
        except LockedError:
            if time.monotonic() + delay > deadline:
                raise
            log.info("%s waits for the vault's lock", owner)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


@contextmanager
def _both(first: Any, second: Any) -> Iterator[None]:
    with first, second:
        yield


def _by_vm(points: list[PointRecord]) -> dict[str, list[PointRecord]]:
    out: dict[str, list[PointRecord]] = {}
    for p in points:
        out.setdefault(p.vm, []).append(p)
    return out
