"""``cutpoint delete POINT`` and ``cutpoint undelete POINT``: one point, by id, with the locks prune takes.

Delete refuses a point younger than the vault's immutability and a point being served; in a vault with soft delete
it stays recoverable (``softdelete``) until its soft delete expires and gc purges it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..catalog.db import PointRecord
from ..errors import ImmutableError, LockedError, UsageError
from . import approvals, guard, protection, softdelete
from .prune import parse_created
from .vault import Vault


@dataclass
class DeleteResult:
    point: str
    vm: str
    soft: bool
    recoverable_until: datetime | None       # soft: when gc may purge it

    def to_json(self) -> dict[str, Any]:
        until = self.recoverable_until
        return {"point": self.point, "vm": self.vm, "soft_deleted": self.soft,
                "recoverable_until": until.isoformat(timespec="seconds").replace("+00:00", "Z") if until else None}


def find_visible(vault: Vault, ref: str) -> PointRecord:
    """A visible point of any VM by id or unique id prefix (point ids are unique across the vault)."""
    return softdelete.by_ref(vault.catalog.points(), ref, f"vault {vault.where} has no restore point {ref!r}; list "
                             "them with 'cutpoint points' (soft-deleted ones with 'cutpoint points --deleted')")


def delete_point(vault: Vault, ref: str, request: str | None = None) -> DeleteResult:
    """Refused while the vault's immutability protects the point, unless the vault is guarded and ``request`` is
    the guard's approval of this early delete (``approvals.authorize``)."""
    if not ref:
        raise UsageError("delete needs a point id (see 'cutpoint points'); nothing was removed")
    vault.require_trusted(f"deleting point {ref!r}")
    rec = find_visible(vault, ref)
    with vault.points_lock(shared=False), vault.vm_lock(rec.vm, writer=False):
        rec = find_visible(vault, rec.id)             # under the lock: still there
        config, now = protection.current_config(vault), protection.now()
        prot = protection.Protection.of(config)
        try:
            created = parse_created(rec.created)
        except (TypeError, ValueError):
            created = None                            # a damaged row: its age is unknown
        early = prot.immutable_days > 0 and (created is None or prot.is_immutable(created, now))
        if early and guard.of(config) is None:
            until = f"until {prot.immutable_until(created):%Y-%m-%d %H:%M}Z" if created else "(its age is unknown)"
            raise ImmutableError(f"point {rec.id} is immutable {until}: the vault keeps every point "
                                 f"{prot.immutable_days} days; nothing was removed")
        if vault.served()(rec.id):
            raise LockedError(f"point {rec.id} is being served (a mount, a file view or an instant-restored VM); "
                              "stop that first; nothing was removed")
        if early:                                     # guarded: only with the guard's approval, used up here
            approvals.authorize(vault, config, approvals.Operation("delete-point", {"point": rec.id, "vm": rec.vm}),
                                request)
        softdelete.remove(vault, rec.vm, [rec], prot, now)
        soft = prot.soft_delete_days > 0 and softdelete.softly_deletable(vault, rec)
        return DeleteResult(rec.id, rec.vm, soft, prot.expires(now) if soft else None)


def undelete_point(vault: Vault, ref: str) -> PointRecord:
    vault.require_trusted(f"undeleting point {ref!r}")
    dp = softdelete.find(vault, protection.current(vault), ref)
    with vault.points_lock(shared=False), vault.vm_lock(dp.vm, writer=False):
        prot = protection.current(vault)
        dp = softdelete.find(vault, prot, dp.id)       # under the lock: still deleted
        return softdelete.undelete(vault, prot, dp, protection.now())
