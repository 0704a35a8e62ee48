"""``cutpoint vault delete``: remove a vault's objects, every point with them (docs/format.md §21.5).

The caller must type the vault's id (``--confirm ID``). A guarded vault is deleted only with a request its guard
approved; an unguarded one is refused while its immutability still protects a point (visible or soft-deleted). The
objects go through ``vault.backend`` (a directory or a bucket alike), ``config.json`` last: until then the vault
opens, with fewer objects, and a repeated delete finishes the job. The guard's requests and audit log stay, so the
record of who approved the deletion outlives the vault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ImmutableError, LockedError, UsageError
from . import approvals, audit, guard, location, protection, remote, softdelete
from .prune import parse_created
from .vault import KEY_FILE, Vault

KEPT = (f"{approvals.REQUESTS}/", f"{audit.AUDIT}/")
LAST = (KEY_FILE, "config.json")
HOST_FILES = ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm")


@dataclass(frozen=True)
class VaultDeleteResult:
    vault: str
    id: str
    objects: int
    kept: int                         # requests and audit objects left in place

    def to_json(self) -> dict[str, Any]:
        return {"vault": self.vault, "id": self.id, "deleted_objects": self.objects, "kept_audit_objects": self.kept}


def delete_vault(vault: Vault, confirm: str | None, request: str | None = None) -> VaultDeleteResult:
    vid = str(vault.config["id"])
    where = location.describe(vault.root)
    if confirm != vid:
        raise UsageError(f"deleting vault {where} removes every point in it: confirm with --confirm {vid} (its id, "
                         "'cutpoint vault info' shows it); nothing was removed")
    vault.require_trusted("deleting the vault")
    with vault.points_lock(shared=False), vault.gc_lock():
        config = protection.current_config(vault)
        if guard.of(config) is not None:
            _check_pins(vault)
            approvals.authorize(vault, config, approvals.Operation("delete-vault", {}), request)
        else:
            _check_immutability(vault, protection.Protection.of(config))
            _check_pins(vault)
        b = vault.backend
        names = [o.name for o in b.list() if o.name not in LAST and o.name not in HOST_FILES
                 and not o.name.startswith(KEPT)]
        kept = sum(1 for o in b.list() if o.name.startswith(KEPT))
        for name in names:
            b.delete(name)
        b.sync()
        for name in LAST:                    # config.json last: until it goes, this is a (smaller) vault
            b.delete(name)
        b.sync()
    vault.close()
    for name in (*HOST_FILES, *LAST):        # this host's catalog (and, for S3, its copies of the metadata)
        (vault.root / name).unlink(missing_ok=True)
    for d in sorted((p for p in vault.root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()                        # empty directories only
        except OSError:
            pass
    if vault.remote is None:
        try:
            vault.root.rmdir()               # nothing kept: the directory goes too
        except OSError:
            pass
    return VaultDeleteResult(where, vid, len(names) + len(LAST), kept)


def _check_immutability(vault: Vault, prot: protection.Protection) -> None:
    if prot.immutable_days == 0:
        return
    if vault.remote is not None:            # under the lock: points another host committed since this one opened
        sync = remote.sync_catalog(vault)
        if sync.problems:
            raise ImmutableError(f"vault {location.describe(vault.root)} is immutable for {prot.immutable_days} "
                                 f"days and the age of one of its points cannot be judged ({sync.problems[0]}): it "
                                 "is not deleted before that can be; nothing was removed")
    t = protection.now()
    created = [p.created for p in vault.catalog.points()]
    created += [d.row.created for d in softdelete.scan(vault, prot) if d.row is not None]
    for c in created:
        try:
            young = prot.is_immutable(parse_created(c), t)
        except (TypeError, ValueError):
            young = True
        if young:
            raise ImmutableError(f"vault {location.describe(vault.root)} is immutable for {prot.immutable_days} "
                                 f"days and holds a point created {c}: it cannot be deleted before that point may "
                                 "be (a guarded vault can be, with its guard's approval); nothing was removed")


def _check_pins(vault: Vault) -> None:
    served = vault.served()
    for p in vault.catalog.points():
        if served(p.id):
            raise LockedError(f"point {p.id} is being served (a mount, a file view or an instant-restored VM); "
                              "stop that first; nothing was removed")
