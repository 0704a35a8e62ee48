"""Immutability and soft delete: how long no point may be removed, and how long a removed one stays recoverable.

Both are fields of ``config.json`` (``immutable_days``, ``soft_delete_days``; absent means 0, as in every vault made
before they existed), so the config MAC covers them: an edit of config.json is refused at open (docs/format.md §7,
§19). ``vault protect`` may lengthen them; while a vault is immutable it refuses to shorten either, and a guarded
vault (``guard.py``, §21) shortens either only with a request its guard approved. An unguarded immutable vault's
protection is absolute: once it holds points it cannot be given a guard either (``guard.check_can_add``), since the
operator would hold that guard's key; the guard comes first, the immutability or the first point after. On a local directory these rules
are enforced by cutpoint, not by the filesystem: they protect against mistakes, not against root
(docs/threat-model.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from ..errors import ImmutableError, UsageError
from . import config as cfgmod
from . import remote
from .fsutil import write_atomic

if TYPE_CHECKING:
    from .vault import Vault


@dataclass(frozen=True)
class Protection:
    immutable_days: int = 0
    soft_delete_days: int = 0

    @classmethod
    def of(cls, config: dict[str, Any]) -> "Protection":
        """From a validated config (``config.validate`` bounds-checked both fields)."""
        return cls(int(config.get("immutable_days", 0)), int(config.get("soft_delete_days", 0)))

    def to_config(self) -> dict[str, int]:
        return {"immutable_days": self.immutable_days, "soft_delete_days": self.soft_delete_days}

    def immutable_until(self, created: datetime) -> datetime:
        return created + timedelta(days=self.immutable_days)

    def is_immutable(self, created: datetime, now: datetime) -> bool:
        return self.immutable_days > 0 and now < self.immutable_until(created)

    def expires(self, deleted: datetime) -> datetime:
        """When a point soft-deleted at ``deleted`` may be purged (with the vault's setting now: lengthening it
        extends the points already deleted)."""
        return deleted + timedelta(days=self.soft_delete_days)


def check_days(value: int, option: str) -> int:
    if not 0 <= value <= cfgmod.MAX_DAYS:
        raise UsageError(f"{option} {value} is not a number of days from 0 to {cfgmod.MAX_DAYS}; nothing was changed")
    return value


def current_config(vault: "Vault", *, fetch: bool = True) -> dict[str, Any]:
    """``config.json`` as it is now, authenticated again and validated. ``fetch=False``: an S3 vault's copy on this
    host, without asking the bucket (pages that only show it)."""
    if fetch:
        remote.fetch_meta(vault.root)       # S3: the bucket's config as it is now (another host may have changed it)
    config = cfgmod.read_config(vault.root)
    if vault.sealer.keys is not None and (int(config["version"]) >= 3 or "mac" in vault.config):
        cfgmod.check_mac(config, vault.sealer.keys, vault.root)
    cfgmod.validate(config, vault.root)
    return config


def current(vault: "Vault", *, fetch: bool = True) -> Protection:
    """The protection in ``config.json`` as it is now, authenticated again: prune, delete and gc read it under their
    locks, so a change made by 'vault protect' after they opened the vault is not missed, nor an edit accepted."""
    return Protection.of(current_config(vault, fetch=fetch))


def write_config(vault: "Vault", sealed: dict[str, Any]) -> None:
    """Replace the vault's (sealed) config: on S3 the bucket's object, which is the vault's, then this host's copy."""
    data = json.dumps(sealed, indent=1).encode()
    if vault.remote is not None:
        vault.backend.put("config.json", data)
        vault.backend.sync()
    write_atomic(vault.root / "config.json", data)
    vault.config = sealed


def reduces(old: Protection, new: Protection) -> bool:
    return new.immutable_days < old.immutable_days or new.soft_delete_days < old.soft_delete_days


def check_change(old: Protection, new: Protection) -> None:
    """Lengthening is always allowed; while the vault is immutable, nothing may be shortened (unless the vault's
    guard approved it: ``change``)."""
    if old.immutable_days == 0:
        return
    if new.immutable_days < old.immutable_days:
        raise ImmutableError(f"the vault is immutable for {old.immutable_days} days: immutability cannot be reduced "
                             f"(asked {new.immutable_days}); nothing was changed. Only a new vault can have less")
    if new.soft_delete_days < old.soft_delete_days:
        raise ImmutableError(f"the vault is immutable: soft delete cannot be switched off or shortened from "
                             f"{old.soft_delete_days} to {new.soft_delete_days} days; nothing was changed")


def change(vault: "Vault", immutable_days: int | None, soft_delete_days: int | None,
           request: str | None = None) -> Protection:
    """'vault protect': write the config with the new protection and a new MAC. Holds the points lock exclusively
    and the gc lock, so no prune, delete, undelete or gc is deciding meanwhile. In a guarded vault any reduction
    needs ``request``, approved by the guard for exactly this change (``approvals.authorize``); then the
    immutability rule of ``check_change`` is lifted too (that is what the second principal is for)."""
    from . import approvals, guard
    if vault.sealer.keys is None or int(vault.config["version"]) < 3:
        raise UsageError(f"vault {vault.where} is format v{vault.config['version']}, whose config is not "
                         "authenticated: it cannot hold immutability or soft delete; create a new vault with "
                         "'cutpoint vault init' and back up into it")
    vault.require_trusted("changing the vault's protection")
    with vault.points_lock(shared=False), vault.gc_lock():
        old = current(vault)
        new = Protection(old.immutable_days if immutable_days is None
                         else check_days(immutable_days, "--immutable-days"),
                         old.soft_delete_days if soft_delete_days is None
                         else check_days(soft_delete_days, "--soft-delete-days"))
        config = current_config(vault)
        if guard.of(config) is not None and reduces(old, new):
            approvals.authorize(vault, config, approvals.protect_operation(old, new), request)
        else:
            check_change(old, new)
        if new != old:
            config = {k: v for k, v in config.items() if k != "mac"}
            config.update(new.to_config())
            write_config(vault, cfgmod.seal(config, vault.sealer.keys))
        return new


def now() -> datetime:
    return datetime.now(timezone.utc)
