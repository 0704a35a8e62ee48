"""Alerts as the console shows them: failed jobs and open RPO breaches, each acknowledgeable once.

Acknowledgements are rows of a small ``console_acks`` table in the catalog file (keyed ``job:<id>`` or
``rpo:<vm>:<since>``), so they survive a restart and a new breach of the same VM is a new alert.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import timedelta

from ...catalog.sqlite import connect
from ...errors import VaultError
from ...jobs.store import iso
from ...service.daemon import Service

SCHEMA = "CREATE TABLE IF NOT EXISTS console_acks (key TEXT PRIMARY KEY, at TEXT NOT NULL, role TEXT NOT NULL);"
_lock = threading.Lock()
_dbs: dict[str, sqlite3.Connection] = {}


@dataclass(frozen=True)
class Alert:
    key: str
    when: str
    what: str
    text: str
    acked: bool


def _db(svc: Service) -> sqlite3.Connection:
    path = svc.vaults.catalog_path
    with _lock:
        if str(path) not in _dbs:
            _dbs[str(path)] = connect(path, SCHEMA, "the console's alert acknowledgements", threads=True)
        return _dbs[str(path)]


def _acked(svc: Service) -> set[str]:
    with _lock:
        try:
            return {r[0] for r in _db_unlocked(svc).execute("SELECT key FROM console_acks")}
        except sqlite3.Error as exc:
            raise VaultError(f"console_acks table: {exc}") from exc


def _db_unlocked(svc: Service) -> sqlite3.Connection:
    return _dbs[str(svc.vaults.catalog_path)]


def alerts(svc: Service, days: int = 7) -> list[Alert]:
    _db(svc)
    acked = _acked(svc)
    since = iso(svc.clock.now() - timedelta(days=days))
    out = []
    for v in svc.vaults.get().catalog.vms():
        breach = svc.rpo.open_breach(v.name)
        if breach:
            key = f"rpo:{v.name}:{breach}"
            out.append(Alert(key, breach, f"VM {v.name} breaches its RPO", f"since {breach}", key in acked))
    for j in svc.jobs.list(state="failed", since=since, limit=500):
        key = f"job:{j.id}"
        out.append(Alert(key, j.ended or j.started, f"{j.kind} job #{j.id} failed" + (f" (VM {j.vm})" if j.vm else ""),
                         j.error or "", key in acked))
    return out


def open_alerts(svc: Service) -> list[Alert]:
    return [a for a in alerts(svc) if not a.acked]


def acknowledge(svc: Service, key: str, role: str) -> bool:
    """False if ``key`` names no current alert (nothing is stored for it)."""
    if key not in {a.key for a in alerts(svc)}:
        return False
    with _lock:
        try:
            _db_unlocked(svc).execute("INSERT OR IGNORE INTO console_acks (key, at, role) VALUES (?,?,?)",
                                      (key, iso(svc.clock.now()), role))
        except sqlite3.Error as exc:
            raise VaultError(f"console_acks table: {exc}") from exc
    return True
