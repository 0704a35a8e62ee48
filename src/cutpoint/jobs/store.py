"""Jobs: one row per backup, restore, prune, verify or gc, in a ``jobs`` table of the vault's catalog file.

A job is inserted ``running`` with the pid of the process doing it and ends ``succeeded``, ``failed`` or
``interrupted``. A process that dies cannot mark its own jobs, so every reader first *reaps*: a ``running`` job
whose pid is gone is marked ``interrupted``. The table is created by this module (``CREATE TABLE IF NOT EXISTS``),
not by the catalog, so it grows without touching the point index.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import pids
from ..catalog.sqlite import connect
from ..errors import NotFoundError, UsageError, VaultError

KINDS = ("backup", "restore", "prune", "verify", "gc", "drill", "copy")
STATES = ("running", "succeeded", "failed", "interrupted")
FINAL = ("succeeded", "failed", "interrupted")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    vm          TEXT,
    state       TEXT NOT NULL,
    trigger     TEXT NOT NULL,       -- schedule, catch-up, retry, manual (CLI), api, service
    slot        TEXT,                -- the schedule slot (UTC) a scheduled backup serves
    attempt     INTEGER NOT NULL DEFAULT 1,
    started     TEXT NOT NULL,
    ended       TEXT,
    duration_s  REAL,
    bytes       INTEGER NOT NULL DEFAULT 0,
    point       TEXT,
    error       TEXT,
    pid         INTEGER NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_vm ON jobs (vm, id);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
"""


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


@dataclass
class Job:
    id: int
    kind: str
    vm: str | None
    state: str
    trigger: str
    slot: str | None
    attempt: int
    started: str
    ended: str | None
    duration_s: float | None
    bytes: int
    point: str | None
    error: str | None
    pid: int
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class JobStore:
    """Thread-safe: one connection serialized by a lock; every write is a single short statement."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self.db = connect(path, SCHEMA, "the jobs table", threads=True)

    def close(self) -> None:
        self.db.close()

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self.db.execute(sql, args)
            except sqlite3.Error as exc:
                raise VaultError(f"jobs table: {exc}") from exc

    def start(self, kind: str, vm: str | None, trigger: str, now: datetime, *, slot: str | None = None,
              attempt: int = 1, detail: dict[str, Any] | None = None) -> int:
        if kind not in KINDS:
            raise UsageError(f"unknown job kind {kind!r}")
        cur = self._exec("INSERT INTO jobs (kind, vm, state, trigger, slot, attempt, started, pid, detail) "
                         "VALUES (?,?,?,?,?,?,?,?,?)",
                         (kind, vm, "running", trigger, slot, attempt, iso(now), os.getpid(),
                          json.dumps(detail or {})))
        return int(cur.lastrowid or 0)

    def progress(self, job_id: int, nbytes: int) -> None:
        self._exec("UPDATE jobs SET bytes=? WHERE id=? AND state='running'", (nbytes, job_id))

    def finish(self, job_id: int, state: str, now: datetime, *, nbytes: int | None = None, point: str | None = None,
               error: str | None = None, detail: dict[str, Any] | None = None) -> Job:
        if state not in FINAL:
            raise ValueError(f"not a final job state: {state}")
        job = self.get(job_id)
        merged = {**job.detail, **(detail or {})}
        duration = max(0.0, (now - parse_iso(job.started)).total_seconds())
        self._exec("UPDATE jobs SET state=?, ended=?, duration_s=?, bytes=?, point=?, error=?, detail=? WHERE id=?",
                   (state, iso(now), round(duration, 3), job.bytes if nbytes is None else nbytes, point, error,
                    json.dumps(merged, default=str), job_id))
        return self.get(job_id)

    def get(self, job_id: int) -> Job:
        row = self._exec("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id}; list jobs with 'cutpoint jobs'")
        return _job(row)

    def list(self, *, vm: str | None = None, state: str | None = None, kind: str | None = None,
             limit: int = 100, since: str | None = None) -> list[Job]:
        """Most recent first."""
        where, args = [], []
        for col, val in (("vm", vm), ("state", state), ("kind", kind)):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        if since is not None:
            where.append("started>=?")
            args.append(since)
        q = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
        return [_job(r) for r in self._exec(q, (*args, limit)).fetchall()]

    def reap(self, now: datetime, *, own_running: set[int] | None = None) -> builtins.list[int]:
        """Mark ``running`` jobs whose process is gone as ``interrupted``; with ``own_running`` (the ids this
        process is really running), also this process's jobs that are not among them (left by a crash of a
        previous run that had the same pid, or by a thread that died)."""
        reaped = []
        for job in self.list(state="running", limit=100000):
            mine = job.pid == os.getpid()
            if mine and (own_running is None or job.id in own_running):
                continue
            if not mine and pids.alive(job.pid):
                continue
            self.finish(job.id, "interrupted", now,
                        error=f"the process running it (pid {job.pid}) ended before the job did")
            reaped.append(job.id)
        return reaped


def _job(r: tuple[Any, ...]) -> Job:
    return Job(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13],
               json.loads(r[14]))
