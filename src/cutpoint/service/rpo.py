"""RPO watch: alert when a VM has gone longer than its policy promises without a successful backup.

A VM with a policy is *in breach* when ``now > reference + interval + grace``, where ``reference`` is the newer of
its newest committed point and the moment it got its current schedule (*armed*: a VM just given a policy owes
nothing yet, however old its points), ``interval`` is the policy's slot gap at the reference
(:func:`~cutpoint.policy.schedule.interval_at`) and ``grace`` the policy's ``rpo_grace_minutes`` (default 60).
While a backup of the VM is running the check waits (its point is not committed yet; the job timeout bounds that).

A breach alerts once (``rpo.breach``); which reference it was raised for is kept in an ``rpo_state`` table of the
catalog file (owned by this module), so a restart does not repeat it. A newer successful backup ends it
(``rpo.recovered``) and re-arms the watch for the next breach.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path

from ..catalog.db import Catalog
from ..catalog.sqlite import connect
from ..jobs.alerts import Alerter
from ..jobs.store import iso, parse_iso
from ..policy.model import Policy
from ..policy.schedule import interval_at

log = logging.getLogger(__name__)
SKEW = timedelta(minutes=5)
"""A point dated further than this after now is not taken as a recent success (a planted or skewed row)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS rpo_state (
    vm        TEXT PRIMARY KEY,
    schedule  TEXT NOT NULL,     -- Policy.schedule_key() the watch was armed for; another key re-arms it
    armed     TEXT NOT NULL,     -- when the VM got that schedule
    breach    TEXT,              -- the reference an rpo.breach alert was sent for (NULL: no open breach)
    deadline  TEXT               -- that breach's deadline
);
"""


class RpoWatch:
    def __init__(self, path: Path, alerter: Alerter) -> None:
        self._lock = threading.Lock()
        self.db = connect(path, SCHEMA, "the RPO state", threads=True)
        self.alerter = alerter

    def close(self) -> None:
        self.db.close()

    def drop(self, vm: str) -> None:
        """The VM has no policy any more: nothing is owed."""
        with self._lock:
            self.db.execute("DELETE FROM rpo_state WHERE vm=?", (vm,))

    def open_breach(self, vm: str) -> str | None:
        """The deadline of the VM's open (alerted, not yet recovered) breach, or None."""
        with self._lock:
            row = self.db.execute("SELECT deadline FROM rpo_state WHERE vm=? AND breach IS NOT NULL",
                                  (vm,)).fetchone()
        return str(row[0]) if row is not None else None

    def check(self, catalog: Catalog, vm: str, policy: Policy, now: datetime, *, backing_up: bool) -> str | None:
        """One pass for ``vm``: returns the event sent (``rpo.breach``/``rpo.recovered``) or None."""
        key = policy.schedule_key()
        with self._lock:
            row = self.db.execute("SELECT schedule, armed, breach, deadline FROM rpo_state WHERE vm=?",
                                  (vm,)).fetchone()
        if row is None or row[0] != key:
            with self._lock:
                self.db.execute("INSERT OR REPLACE INTO rpo_state VALUES (?,?,?,NULL,NULL)", (vm, key, iso(now)))
            return None
        armed, breach = parse_iso(row[1]), row[2]
        last = newest_success(catalog, vm, now)
        reference = max(last, armed) if last is not None else armed
        grace = timedelta(minutes=policy.rpo_grace)
        deadline = reference + interval_at(policy, reference) + grace
        if now <= deadline:
            if breach is not None:
                self._set(vm, None, None)
                self._send("rpo.recovered", vm, policy, last, row[3], logging.INFO,
                           f"RPO of VM {vm} met again: a backup succeeded at {_t(last)}")
                return "rpo.recovered"
            return None
        if backing_up or breach == iso(reference):
            return None
        self._set(vm, iso(reference), iso(deadline))
        since = _t(last) if last is not None else f"it got policy {policy.name} at {iso(armed)}"
        self._send("rpo.breach", vm, policy, last, iso(deadline), logging.ERROR,
                   f"RPO breach: VM {vm} has had no successful backup since {since}; policy {policy.name} wanted "
                   f"one by {iso(deadline)} (its interval plus rpo_grace_minutes {policy.rpo_grace})")
        return "rpo.breach"

    def _set(self, vm: str, breach: str | None, deadline: str | None) -> None:
        with self._lock:
            self.db.execute("UPDATE rpo_state SET breach=?, deadline=? WHERE vm=?", (breach, deadline, vm))

    def _send(self, event: str, vm: str, policy: Policy, last: datetime | None, deadline: str | None, level: int,
              message: str) -> None:
        log.log(level, "%s", message)
        self.alerter.send({"event": event, "vm": vm, "policy": policy.name,
                           "last_success": iso(last) if last is not None else None, "deadline": deadline,
                           "grace_minutes": policy.rpo_grace, "message": message})


def newest_success(catalog: Catalog, vm: str, now: datetime) -> datetime | None:
    """When the VM's newest committed point was cut. Rows that are damaged, unreadable or dated after ``now`` (plus
    a little clock skew) do not count: the catalog sits in the vault, which whoever can write its storage can edit,
    and a row dated next year must not silence the alert."""
    best: datetime | None = None
    for p in catalog.points(vm):
        if p.damaged is not None:
            continue
        try:
            t = parse_iso(p.created)
        except (TypeError, ValueError):
            continue
        if t.tzinfo is not None and t <= now + SKEW and (best is None or t > best):
            best = t
    return best


def _t(t: datetime | None) -> str:
    return iso(t) if t is not None else "never"
