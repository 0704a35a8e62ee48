"""The vault: one directory holding chunks, manifests, the catalog and locks (layout in docs/design.md)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ..catalog.db import Catalog, PointRecord
from ..errors import IntegrityError, NotFoundError, VaultError
from . import locks
from .chunks import ChunkStore
from .fsutil import fsync_dir, write_atomic
from .manifest import Manifest, manifest_path

VAULT_FORMAT = "cutpoint-vault"
VAULT_VERSION = 1
DEFAULT_CHUNK_SIZE = 4 << 20


class Vault:
    def __init__(self, root: Path, config: dict[str, object]) -> None:
        self.root = root
        self.config = config
        self.chunk_size = int(config["chunk_size"])  # type: ignore[arg-type]
        self.chunks = ChunkStore(root / "chunks")
        self.catalog = Catalog(root / "catalog.sqlite")

    @classmethod
    def open(cls, root: Path, *, create: bool = True, chunk_size: int = DEFAULT_CHUNK_SIZE) -> "Vault":
        root = root.expanduser()
        cfg_path = root / "config.json"
        if not cfg_path.exists():
            if not create:
                raise NotFoundError(f"{root} is not a cutpoint vault (no config.json); create it with a backup or "
                                    "'cutpoint vault init'")
            cls._init(root, chunk_size)
        try:
            config = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as exc:
            raise VaultError(f"cannot read vault config {cfg_path}: {exc}") from exc
        if config.get("format") != VAULT_FORMAT or config.get("version") != VAULT_VERSION:
            raise VaultError(f"{root} holds vault format {config.get('format')} v{config.get('version')}; "
                             f"this cutpoint reads {VAULT_FORMAT} v{VAULT_VERSION}")
        if not os.access(root, os.W_OK):
            raise VaultError(f"vault directory {root} is not writable; fix its permissions or pass --vault DIR "
                             "(or set CUTPOINT_VAULT) to use another")
        return cls(root, config)

    @staticmethod
    def _init(root: Path, chunk_size: int) -> None:
        try:
            root.mkdir(parents=True, exist_ok=True)
            for sub in ("chunks", "points", "locks"):
                (root / sub).mkdir(exist_ok=True)
            config = {"format": VAULT_FORMAT, "version": VAULT_VERSION, "id": uuid.uuid4().hex,
                      "chunk_size": chunk_size, "hash": "sha256", "compression": "zstd",
                      "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
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
        path = manifest_path(self.root, manifest.vm, manifest.point)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, manifest.to_bytes())
            fsync_dir(path.parent.parent)
        except OSError as exc:
            raise VaultError(f"cannot write manifest {path}: {exc.strerror or exc}") from exc
        rec = PointRecord(
            id=manifest.point, vm=manifest.vm, created=manifest.created, consistency=manifest.consistency,
            mode=manifest.mode, pause_ms=manifest.pause_ms, logical_bytes=sum(d.size for d in manifest.disks),
            read_bytes=sum(d.read_bytes for d in manifest.disks),
            stored_bytes=sum(d.stored_bytes for d in manifest.disks),
            manifest=str(path.relative_to(self.root)), summary=summary)
        self.catalog.add_point(rec)
        return rec

    def manifest(self, rec: PointRecord) -> Manifest:
        path = self.root / rec.manifest
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"manifest of point {rec.id} is missing ({path})") from None
        return Manifest.from_bytes(data, f"manifest of point {rec.id}")

    # -- locks -------------------------------------------------------------------------------------------------------

    @contextmanager
    def vm_lock(self, vm: str) -> Iterator[None]:
        """Held for a whole backup or restore of one VM: two backups of one VM never run at once."""
        with locks.hold(self.root / "locks" / f"vm-{vm}.lock", f"VM {vm!r}"):
            yield
