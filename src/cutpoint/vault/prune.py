"""Prune: forget the points of one VM that a retention policy does not keep.

Order (docs/format.md §14): the catalog rows of all removed points go in one transaction (the commit point: after it
the points are gone for every reader, before it nothing changed), then their manifest files are deleted. A crash in
between leaves manifests without rows, which gc removes. Chunks are never touched here: freeing space is gc's job,
because only gc knows what other points and running backups still use. A point that is being served (mounted, or
running an instant-restored VM) holds a pin and is kept, with that reason, until it is released. The newest good
point (last verify not ``failed``, catalog row readable) is always kept (``retention.decide``). A point younger than
the vault's immutability is kept, with that reason (``kept_by_immutability``). In a vault with soft delete the
removed points' manifests move to ``deleted/`` instead (``softdelete.remove``, docs/format.md §19).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone, tzinfo
from typing import Any

from ..errors import UsageError
from . import protection, softdelete
from .protection import Protection
from .retention import Decision, Retention, decide
from .vault import Vault


SERVED = "in use: being served (a mount, a file view or an instant-restored VM)"


@dataclass
class PruneResult:
    vm: str
    policy: Retention
    dry_run: bool
    decisions: list[Decision]
    protection: Protection = field(default_factory=Protection)
    immutable: list[str] = field(default_factory=list)     # points the policy would remove, kept by immutability

    def to_json(self) -> dict[str, Any]:
        def one(d: Decision) -> dict[str, Any]:
            return {"point": d.id, "created": d.created.isoformat().replace("+00:00", "Z"),
                    "reasons": list(d.reasons)}
        return {"vm": self.vm, "policy": self.policy.describe(), "dry_run": self.dry_run,
                "keep": [one(d) for d in self.decisions if d.keep],
                "remove": [one(d) for d in self.decisions if not d.keep],
                "immutable_days": self.protection.immutable_days, "kept_by_immutability": list(self.immutable),
                "soft_delete_days": self.protection.soft_delete_days}


def parse_created(s: str) -> datetime:
    t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def prune(vault: Vault, vm: str, policy: Retention, *, dry_run: bool = False,
          tz: tzinfo = timezone.utc) -> PruneResult:
    """``tz``: the zone whose days/weeks/months/years the buckets follow (the service passes its policy's)."""
    if policy.empty():
        raise UsageError("prune needs at least one rule (--keep-last, --keep-daily, --keep-weekly, --keep-monthly, "
                         "--keep-yearly); nothing was removed")
    if any(n < -1 for n in (policy.last, policy.daily, policy.weekly, policy.monthly, policy.yearly)):
        raise UsageError("--keep-* counts are a number of points, or -1 for all")
    if not vault.catalog.points(vm):
        vault.catalog.vm(vm)            # unknown VM: a clear error; a known one has nothing to prune
    if dry_run:
        return _plan(vault, vm, policy, True, tz)
    vault.require_trusted(f"prune of VM {vm!r}")
    with vault.points_lock(shared=False), vault.vm_lock(vm, writer=False):
        res = _plan(vault, vm, policy, False, tz)
        gone = {d.id for d in res.decisions if not d.keep}
        softdelete.remove(vault, vm, [p for p in vault.catalog.points(vm) if p.id in gone], res.protection,
                          protection.now())
    return res


def _plan(vault: Vault, vm: str, policy: Retention, dry_run: bool, tz: tzinfo = timezone.utc) -> PruneResult:
    pts = []
    bad: set[str] = set()
    for p in vault.catalog.points(vm):
        v = vault.catalog.verified(p.id)
        dr = vault.catalog.drill(p.id)
        if p.damaged or (v is not None and v.state == "failed") or (dr is not None and dr.verdict == "failed"):
            bad.add(p.id)             # not restorable (or did not boot) as far as we know: never the newest good
        try:
            pts.append((p.id, parse_created(p.created)))
        except (TypeError, ValueError):
            raise UsageError(f"catalog row of point {p.id} has no valid creation time ({p.created!r}); run "
                             "'cutpoint verify' and fix the catalog before pruning") from None
    prot, now = protection.current(vault), protection.now()
    res = PruneResult(vm, policy, dry_run, [], prot)
    served = vault.served()
    for d in decide(pts, policy, tz, bad):
        if not d.keep and prot.is_immutable(d.created, now):
            res.immutable.append(d.id)
            d = replace(d, keep=True, reasons=(f"immutable until {prot.immutable_until(d.created):%Y-%m-%d %H:%M}Z",))
        elif not d.keep and served(d.id):
            d = replace(d, keep=True, reasons=(SERVED,))
        res.decisions.append(d)
    return res
