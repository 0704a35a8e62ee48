"""An S3 vault's metadata and catalog on this host (docs/format.md §19).

The bucket holds the vault; this host keeps copies of ``config.json`` and ``key.json`` (fetched fresh at every
open, then authenticated exactly as a local vault's: a tampered object is caught by the config MAC and the key
check) and a catalog that follows the bucket's manifests. On S3 the manifest *is* the commit point: a point is
visible once its manifest object exists, whichever host wrote it, and the catalog is an index that ``sync_catalog``
brings up to date at every open (and ``vault rebuild-catalog`` rebuilds from nothing). Object names from a listing
are untrusted: only names of the manifest pattern with valid VM and point names become rows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import names
from ..catalog.db import PointRecord
from ..errors import IntegrityError, NotFoundError, UsageError, VaultError
from . import location
from .fsutil import write_atomic
from .manifest import TREE_FORMATS, Manifest

if TYPE_CHECKING:
    from .vault import Vault

log = logging.getLogger(__name__)
CONFIG, KEY = "config.json", "key.json"
MAX_META = 1 << 20              # config and key files are a few KiB: a hostile huge object is not read whole


def fetch_meta(root: Path) -> None:
    """S3 vault: refresh this host's copies of config.json and key.json from the bucket (nothing for a local one)."""
    loc = location.remote_of(root)
    if loc is None:
        return
    backend = location.backend_for(root)
    try:
        cfg = backend.get(CONFIG, 0, MAX_META)
    except NotFoundError:
        raise NotFoundError(f"no cutpoint vault at {loc.url} (no config.json there); create one with: "
                            f"cutpoint vault init {loc.address}") from None
    try:
        key: bytes | None = backend.get(KEY, 0, MAX_META)
    except NotFoundError:
        key = None
    try:
        write_atomic(root / CONFIG, cfg)
        if key is not None:
            write_atomic(root / KEY, key)
        elif _encrypted(cfg) and (root / KEY).exists():
            # deleted from the bucket, or hidden by a delete marker (which Object Lock allows): removing this host's
            # copy too would leave every point unreadable
            log.warning("vault %s has no key.json in its bucket; this host's copy (%s) is used and kept: put it "
                        "back with 'cutpoint vault key import %s --vault %s'", loc.url, root / KEY, root / KEY,
                        loc.address)
        else:
            (root / KEY).unlink(missing_ok=True)
    except OSError as exc:
        raise VaultError(f"cannot keep this host's copy of {loc.url}'s config in {root}: "
                         f"{exc.strerror or exc}") from exc


def create_meta(root: Path, config: bytes, key: bytes | None, retention: object | None = None) -> None:
    """``vault init s3://…``: the key file, then the config (which makes it a vault), each only if absent."""
    loc = location.remote_of(root)
    assert loc is not None
    backend = location.backend_for(root, retention)
    if key is not None and not backend.create(KEY, key):
        raise UsageError(f"{loc.url} already holds a key file (a vault being created, or a damaged one); choose "
                         "another --vault s3://BUCKET/PREFIX")
    if not backend.create(CONFIG, config):
        raise UsageError(f"{loc.url} is already a cutpoint vault; choose another --vault s3://BUCKET/PREFIX")
    backend.sync()


def check_object_lock(root: Path) -> None:
    """``vault init s3://… --object-lock``: the bucket must have Object Lock enabled (made so by its creator)."""
    loc = location.remote_of(root)
    assert loc is not None
    from .s3backend import S3Backend
    backend = location.backend_for(root)
    assert isinstance(backend, S3Backend)
    if not backend.object_lock_enabled():
        raise UsageError(f"bucket {loc.bucket} has no Object Lock enabled, so --object-lock cannot make the vault "
                         "immutable; create the bucket with Object Lock enabled (and no default retention), or drop "
                         "--object-lock; nothing was created")


def _encrypted(config: bytes) -> bool:
    """Whether a config file (untrusted bytes, authenticated only later) says the vault is encrypted."""
    try:
        doc = json.loads(config)
    except ValueError:
        return False
    return isinstance(doc, dict) and bool(doc.get("encryption"))


def put_key(root: Path, key: bytes, config: dict[str, object]) -> None:
    """``vault key import`` on an S3 vault: the bucket's key file is replaced too, retained like every write of an
    Object Lock vault (``config``: the vault's)."""
    if location.remote_of(root) is not None:
        location.backend_for(root, location.retention_of(config)).put(KEY, key)


def extend_meta_retention(vault: "Vault", days: int) -> int:
    """S3 Object Lock: config.json and key.json retained ``days`` from now, as gc does for the packs. Every point,
    the youngest too, needs both to open; retained only from ``vault init``, they became deletable ``days`` after
    it, and a bucket writer deleting the key's versions would have made every point unreadable. Returns how many
    objects were extended (an unencrypted vault has no key file)."""
    extend = getattr(vault.backend, "extend_retention", None)
    if extend is None:
        return 0
    n = 0
    for name in (CONFIG, KEY):
        try:
            extend(name, days)
        except NotFoundError:
            continue
        n += 1
    return n


@dataclass
class SyncResult:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # manifests the store did not answer for (a timeout, a 5xx after retries): unlike one that does not open, such a
    # point may be whole, so whoever deletes by the catalog (gc, vault delete) must not go on without it
    unreadable: list[str] = field(default_factory=list)


def manifest_names(vault: "Vault") -> dict[str, tuple[str, str]]:
    """Object name -> (VM, point) of every well-named manifest in the bucket."""
    out: dict[str, tuple[str, str]] = {}
    for obj in vault.backend.list("points/"):
        parts = obj.name.split("/")
        if len(parts) != 3 or not parts[2].endswith(".manifest"):
            continue
        vm, point = parts[1], parts[2][:-len(".manifest")]
        if names.is_valid(point) and names.is_valid(vm):
            out[obj.name] = (vm, point)
    return out


def sync_catalog(vault: "Vault", *, rebuild: bool = False) -> SyncResult:
    """Rows for the manifests the bucket has and the catalog lacks; rows removed whose manifest is gone.
    ``rebuild``: every row is read again from its manifest (``vault rebuild-catalog``)."""
    res = SyncResult()
    found = manifest_names(vault)
    rows = {p.manifest: p for p in vault.catalog.points()}
    if rebuild:
        vault.catalog.remove_points([p.id for p in rows.values()])
        rows = {}
    listed = {p.id: p.vm for p in rows.values()}
    for name, (vm, point) in sorted(found.items(), key=lambda kv: (kv[1][1], kv[0])):
        if name in rows:
            continue
        if point in listed:
            # a catalog lists an id once: this point cannot be listed beside the other VM's; it may be whole, so
            # whoever deletes by the catalog must stop (``unreadable``) rather than free its data
            clash = (f"manifest {name}: point id {point} is already listed for VM {listed[point]}, and a catalog "
                     f"lists an id once; that point is not listed, and gc stops until one of the two is gone "
                     f"('cutpoint delete {point}' removes VM {listed[point]}'s; a manifest cannot be renamed: it "
                     f"is sealed to its VM and id)")
            res.problems.append(clash)
            res.unreadable.append(clash)
            log.warning("vault %s: %s", vault.where, clash)
            continue
        try:
            m = Manifest.unseal(vault.sealer, vault.backend.get(name), vm, point, f"manifest {name}")
            if m.format not in TREE_FORMATS or m.chunk_size != vault.chunk_size or m.fanout != vault.fanout:
                raise IntegrityError(f"manifest {name} does not fit this vault (format {m.format}, chunks of "
                                     f"{m.chunk_size} bytes, index nodes of {m.fanout})")
        except (IntegrityError, NotFoundError, VaultError) as exc:
            res.problems.append(str(exc))
            if not isinstance(exc, (IntegrityError, NotFoundError)):
                res.unreadable.append(str(exc))
            if not rebuild:                     # rebuild-catalog reports its problems itself
                log.warning("vault %s: %s; that point is not listed", vault.where, exc)
            continue
        vault.catalog.add_point(record_of(m, name))
        listed[point] = vm
        res.added.append(point)
    gone = [p.id for n, p in rows.items() if n not in found]
    if gone:
        vault.catalog.remove_points(gone)
        res.removed = gone
    return res


def record_of(m: Manifest, name: str) -> PointRecord:
    """A catalog row from a manifest alone (another host's backup, or a rebuilt catalog)."""
    return PointRecord(
        id=m.point, vm=m.vm, created=m.created, consistency=m.consistency, mode=m.mode, pause_ms=m.pause_ms,
        logical_bytes=sum(d.size for d in m.disks), read_bytes=sum(d.read_bytes for d in m.disks),
        stored_bytes=sum(d.stored_bytes for d in m.disks), manifest=name,
        summary=summary_of(m))


def summary_of(m: Manifest) -> dict[str, object]:
    """The backup's JSON result as far as its manifest tells it (``points --json`` lists these): the same keys,
    with ``duration_s`` and per-disk ``mode`` unknown (None)."""
    return {"point": m.point, "vm": m.vm, "created": m.created, "consistency": m.consistency,
            "requested": m.requested, "fallback_reason": m.fallback_reason, "pause_ms": m.pause_ms,
            "frozen_ms": m.frozen_ms, "mode": m.mode, "full_reason": m.full_reason, "parent": m.parent,
            "duration_s": None, "warnings": list(m.warnings), "skipped": list(m.skipped),
            "disks": [{"name": d.name, "size": d.size, "read_bytes": d.read_bytes, "stored_bytes": d.stored_bytes,
                       "dirty_bytes": d.dirty_bytes, "mode": None, "cache": dict(d.cache)} for d in m.disks]}
