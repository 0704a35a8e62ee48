"""What the scheduler remembers per VM, in a ``schedule_state`` table of the catalog file (owned by this module), and
the same for scheduled verify in a ``verify_state`` table.

Kept in the database rather than in memory so that a restart knows which slot was last served: that is what makes
catch-up after downtime exactly one backup, and what lets a killed daemon's owed slot run again after the restart.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..catalog.sqlite import connect
from ..jobs.store import iso, parse_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS {table} (
    vm        TEXT PRIMARY KEY,
    schedule  TEXT NOT NULL,     -- Policy.schedule_key() the state belongs to; another key starts afresh
    handled   TEXT,              -- latest slot served (backed up, or given up on after the last retry)
    pending   TEXT,              -- slot being retried
    attempts  INTEGER NOT NULL DEFAULT 0,
    retry_at  TEXT
);
"""


@dataclass
class VmState:
    vm: str
    schedule: str
    handled: datetime | None = None
    pending: datetime | None = None
    attempts: int = 0
    retry_at: datetime | None = None


TABLES = ("schedule_state", "verify_state", "drill_state", "copy_state")


class StateStore:
    def __init__(self, path: Path, table: str = "schedule_state") -> None:
        if table not in TABLES:
            raise ValueError(f"not a state table: {table}")
        self._lock = threading.Lock()
        self.table = table
        self.db = connect(path, SCHEMA.format(table=table), f"the {table.replace('_', ' ')}", threads=True)

    def close(self) -> None:
        self.db.close()

    def get(self, vm: str) -> VmState | None:
        with self._lock:
            row = self.db.execute("SELECT vm, schedule, handled, pending, attempts, retry_at FROM "
                                  f"{self.table} WHERE vm=?", (vm,)).fetchone()
        if row is None:
            return None
        return VmState(row[0], row[1], _t(row[2]), _t(row[3]), row[4], _t(row[5]))

    def put(self, st: VmState) -> None:
        with self._lock:
            self.db.execute(f"INSERT OR REPLACE INTO {self.table} VALUES (?,?,?,?,?,?)",
                            (st.vm, st.schedule, _s(st.handled), _s(st.pending), st.attempts, _s(st.retry_at)))

    def drop(self, vm: str) -> None:
        with self._lock:
            self.db.execute(f"DELETE FROM {self.table} WHERE vm=?", (vm,))


def _t(s: str | None) -> datetime | None:
    return parse_iso(s) if s else None


def _s(t: datetime | None) -> str | None:
    return iso(t) if t else None
