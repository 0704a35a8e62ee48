"""Policies kept in the vault's catalog file, in a ``policies`` table this module owns, and their assignment to VMs.

Assignment is the ``policy`` key of a VM's ``settings`` in the catalog's ``vms`` table: a VM without one is not
scheduled. Policies live next to the VMs and points so that one vault directory is the whole state of a service.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path

from ..catalog.sqlite import connect
from ..catalog.db import Catalog
from ..errors import NotFoundError, UsageError, VaultError
from .model import Policy

SCHEMA = """
CREATE TABLE IF NOT EXISTS policies (
    name     TEXT PRIMARY KEY,
    body     TEXT NOT NULL,       -- Policy.to_dict() as JSON
    created  TEXT NOT NULL,
    updated  TEXT NOT NULL
);
"""


class PolicyStore:
    """Thread-safe access to the ``policies`` table (one connection, serialized by a lock)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self.db = connect(path, SCHEMA, "the policy table", threads=True)

    def close(self) -> None:
        self.db.close()

    def put(self, policy: Policy, *, replace: bool = False) -> bool:
        """Store ``policy``; returns True if it was created, False if it replaced one (``replace`` only)."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        body = json.dumps(policy.to_dict())
        with self._lock:
            exists = self.db.execute("SELECT 1 FROM policies WHERE name=?", (policy.name,)).fetchone() is not None
            if exists and not replace:
                raise UsageError(f"a policy named {policy.name!r} already exists; delete it first or replace it "
                                 "(--replace, or PUT in the API)")
            if exists:
                self.db.execute("UPDATE policies SET body=?, updated=? WHERE name=?", (body, now, policy.name))
            else:
                self.db.execute("INSERT INTO policies VALUES (?,?,?,?)", (policy.name, body, now, now))
        return not exists

    def get(self, name: str) -> Policy:
        with self._lock:
            row = self.db.execute("SELECT body FROM policies WHERE name=?", (name,)).fetchone()
        if row is None:
            known = ", ".join(p.name for p in self.all()) or "none"
            raise NotFoundError(f"unknown policy {name!r} (defined: {known}); create it with "
                                f"'cutpoint policy create {name} ...'")
        return _load(name, row[0])

    def all(self) -> list[Policy]:
        with self._lock:
            rows = self.db.execute("SELECT name, body FROM policies ORDER BY name").fetchall()
        return [_load(n, b) for n, b in rows]

    def delete(self, name: str, catalog: Catalog) -> None:
        """Delete a policy no VM uses: a policy in use would leave VMs silently unscheduled."""
        self.get(name)
        users = [v.name for v in catalog.vms() if v.settings.get("policy") == name]
        if users:
            raise UsageError(f"policy {name!r} is assigned to {', '.join(users)}; assign another policy first "
                             f"('cutpoint vm set VM --policy none')")
        with self._lock:
            self.db.execute("DELETE FROM policies WHERE name=?", (name,))


def _load(name: str, body: str) -> Policy:
    try:
        return Policy.from_dict(json.loads(body), name)
    except (ValueError, UsageError) as exc:
        raise VaultError(f"stored policy {name!r} is unreadable: {exc}") from exc


def assign(catalog: Catalog, store: PolicyStore, vm: str, policy: str | None) -> None:
    """Assign ``policy`` to ``vm`` (``None`` unassigns: the VM is no longer scheduled)."""
    rec = catalog.vm(vm)
    settings = dict(rec.settings)
    if policy is None:
        settings.pop("policy", None)
    else:
        store.get(policy)
        settings["policy"] = policy
    catalog.update_vm(vm, settings=settings)
