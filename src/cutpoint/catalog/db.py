"""The catalog: a SQLite index of protected VMs and complete restore points, kept inside the vault.

A point's row is inserted only after its manifest and every chunk it references are durable, in one transaction, so
a point that is listed is always restorable; a point that is not listed does not exist for any reader. Manifests stay
the source of truth for a point's content; the catalog is what makes it visible and fast to list.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import faults
from ..errors import NotFoundError, UsageError, VaultError
from ..names import check_vm_name
from .sqlite import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS vms (
    name      TEXT PRIMARY KEY,
    kind      TEXT NOT NULL,          -- 'qmp' (later 'libvirt')
    address   TEXT NOT NULL,          -- QMP socket path
    added     TEXT NOT NULL,
    settings  TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS points (
    id            TEXT PRIMARY KEY,
    vm            TEXT NOT NULL,
    created       TEXT NOT NULL,
    consistency   TEXT NOT NULL,
    mode          TEXT NOT NULL,
    pause_ms      REAL NOT NULL,
    logical_bytes INTEGER NOT NULL,
    read_bytes    INTEGER NOT NULL,
    stored_bytes  INTEGER NOT NULL,
    manifest      TEXT NOT NULL,      -- path relative to the vault root
    summary       TEXT NOT NULL       -- the backup's JSON result
);
CREATE INDEX IF NOT EXISTS points_vm ON points (vm, created);
CREATE TABLE IF NOT EXISTS verified (
    point     TEXT PRIMARY KEY,       -- points.id (no foreign key: a damaged row must not hide its verdict)
    state     TEXT NOT NULL,          -- 'ok' | 'failed'
    level     TEXT NOT NULL,          -- 'structure' | 'data' (--read-data)
    checked   TEXT NOT NULL,          -- ISO 8601 UTC
    problems  TEXT NOT NULL           -- JSON list of strings
);
CREATE TABLE IF NOT EXISTS drills (
    point     TEXT PRIMARY KEY,       -- points.id
    verdict   TEXT NOT NULL,          -- 'passed' | 'failed'
    checked   TEXT NOT NULL,          -- ISO 8601 UTC
    result    TEXT NOT NULL           -- the drill's JSON result (drill --json)
);
"""


@dataclass
class VmRecord:
    name: str
    kind: str
    address: str
    added: str
    settings: dict[str, Any]
    damaged: str | None = None       # why the row's settings are unreadable (``vm_rows`` only; settings then {})


@dataclass
class PointRecord:
    id: str
    vm: str
    created: str
    consistency: str
    mode: str
    pause_ms: float
    logical_bytes: int
    read_bytes: int
    stored_bytes: int
    manifest: str
    summary: dict[str, Any]
    damaged: str | None = None       # why the row itself is unreadable (set by reading, never stored)


@dataclass
class VerifyRecord:
    point: str
    state: str
    level: str
    checked: str
    problems: list[str]


@dataclass
class DrillRecord:
    point: str
    verdict: str                      # 'passed' | 'failed'
    checked: str
    result: dict[str, Any]            # what ``drill --json`` printed


class Catalog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = connect(path, SCHEMA, "the catalog")

    def close(self) -> None:
        self.db.close()

    # -- VMs ---------------------------------------------------------------------------------------------------------

    def add_vm(self, rec: VmRecord) -> None:
        check_vm_name(rec.name)         # every registration (CLI, restore, API) passes here; names become paths
        try:
            self.db.execute("INSERT INTO vms VALUES (?,?,?,?,?)",
                            (rec.name, rec.kind, rec.address, rec.added, json.dumps(rec.settings)))
        except sqlite3.IntegrityError:
            raise UsageError(f"a VM named {rec.name!r} is already registered; pick another name or "
                             f"'cutpoint vm remove {rec.name}' first") from None

    def update_vm(self, name: str, **fields: Any) -> None:
        rec = self.vm(name)
        for k, v in fields.items():
            setattr(rec, k, v)
        self.db.execute("UPDATE vms SET kind=?, address=?, settings=? WHERE name=?",
                        (rec.kind, rec.address, json.dumps(rec.settings), name))

    def remove_vm(self, name: str) -> None:
        self.vm(name)
        self.db.execute("DELETE FROM vms WHERE name=?", (name,))

    def vm(self, name: str) -> VmRecord:
        row = self.db.execute("SELECT name, kind, address, added, settings FROM vms WHERE name=?", (name,)).fetchone()
        if row is None:
            known = ", ".join(v.name for v in self.vms()) or "none"
            raise NotFoundError(f"unknown VM {name!r} (registered: {known}); add it with "
                                f"'cutpoint vm add {name} --qmp SOCKET'")
        return VmRecord(row[0], row[1], row[2], row[3], json.loads(row[4]))

    def vms(self) -> list[VmRecord]:
        rows = self.db.execute("SELECT name, kind, address, added, settings FROM vms ORDER BY name").fetchall()
        return [VmRecord(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def vm_rows(self) -> list[VmRecord]:
        """Every VM, a damaged row included (``damaged`` says why), so that one bad row cannot hide the others."""
        rows = self.db.execute("SELECT name, kind, address, added, settings FROM vms ORDER BY name").fetchall()
        out = []
        for r in rows:
            settings: Any = {}
            damaged = None
            try:
                settings = json.loads(r[4])
                if not isinstance(settings, dict):
                    damaged, settings = f"settings are not an object ({type(settings).__name__})", {}
            except (TypeError, ValueError) as exc:
                damaged = f"settings are not valid JSON ({exc})"
            out.append(VmRecord(str(r[0]), str(r[1]), str(r[2]), str(r[3]), settings, damaged))
        return out

    # -- points ------------------------------------------------------------------------------------------------------

    def add_point(self, p: PointRecord) -> None:
        """The commit point of a backup: one transaction, after which the point is visible (docs/format.md §12)."""
        try:
            with self.transaction():
                self.db.execute("INSERT INTO points VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                                (p.id, p.vm, p.created, p.consistency, p.mode, p.pause_ms, p.logical_bytes,
                                 p.read_bytes, p.stored_bytes, p.manifest, json.dumps(p.summary)))
                faults.hit("catalog-commit")
        except sqlite3.Error as exc:
            raise VaultError(f"cannot record point {p.id} in catalog {self.path}: {exc}") from exc

    def remove_points(self, ids: list[str]) -> None:
        """Forget points in one transaction: either all of them disappear or none (prune's commit point)."""
        try:
            with self.transaction():
                for pid in ids:
                    self.db.execute("DELETE FROM points WHERE id=?", (pid,))
                    self.db.execute("DELETE FROM verified WHERE point=?", (pid,))
                    self.db.execute("DELETE FROM drills WHERE point=?", (pid,))
                faults.hit("prune-commit")
        except sqlite3.Error as exc:
            raise VaultError(f"cannot remove points from catalog {self.path}: {exc}") from exc

    def set_verified(self, v: VerifyRecord) -> None:
        try:
            self.db.execute("INSERT OR REPLACE INTO verified VALUES (?,?,?,?,?)",
                            (v.point, v.state, v.level, v.checked, json.dumps(v.problems)))
        except sqlite3.Error as exc:
            raise VaultError(f"cannot record the verify state of point {v.point}: {exc}") from exc

    def verified(self, point_id: str) -> VerifyRecord | None:
        row = self.db.execute("SELECT point, state, level, checked, problems FROM verified WHERE point=?",
                              (point_id,)).fetchone()
        if row is None:
            return None
        try:
            problems = json.loads(row[4])
        except ValueError:
            problems = ["(unreadable)"]
        return VerifyRecord(row[0], row[1], row[2], row[3], problems)

    def set_drill(self, d: DrillRecord) -> None:
        try:
            self.db.execute("INSERT OR REPLACE INTO drills VALUES (?,?,?,?)",
                            (d.point, d.verdict, d.checked, json.dumps(d.result)))
        except sqlite3.Error as exc:
            raise VaultError(f"cannot record the drill of point {d.point}: {exc}") from exc

    def drill(self, point_id: str) -> DrillRecord | None:
        """The point's last drill; a row whose result is unreadable comes back as failed, saying so."""
        row = self.db.execute("SELECT point, verdict, checked, result FROM drills WHERE point=?",
                              (point_id,)).fetchone()
        if row is None:
            return None
        try:
            result = json.loads(row[3])
            if not isinstance(result, dict):
                raise ValueError("not an object")
        except (TypeError, ValueError):
            return DrillRecord(str(row[0]), "failed", str(row[2]),
                               {"verdict": "failed", "reasons": ["the drill record is unreadable"]})
        verdict = row[1] if row[1] in ("passed", "failed") else "failed"
        return DrillRecord(str(row[0]), verdict, str(row[2]), result)

    def quick_check(self) -> list[str]:
        """SQLite's own structural check of the catalog file; empty when sound."""
        try:
            rows = [r[0] for r in self.db.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.Error as exc:
            return [str(exc)]
        return [] if rows == ["ok"] else rows

    def points(self, vm: str | None = None) -> list[PointRecord]:
        q = "SELECT * FROM points" + (" WHERE vm=?" if vm else "") + " ORDER BY created, id"
        return [_point(r) for r in self.db.execute(q, (vm,) if vm else ()).fetchall()]

    def point(self, vm: str, ref: str) -> PointRecord:
        """Find a point of ``vm`` by id, unique id prefix, or ``latest``."""
        pts = self.points(vm)
        if ref == "latest" and pts:
            return pts[-1]
        exact = [p for p in pts if p.id == ref]
        match = exact or [p for p in pts if p.id.startswith(ref)]
        if len(match) == 1:
            return match[0]
        if not match:
            raise NotFoundError(f"VM {vm!r} has no restore point {ref!r}; list them with 'cutpoint points {vm}'")
        raise UsageError(f"point {ref!r} is ambiguous for VM {vm!r}: {', '.join(p.id for p in match)}")

    def transaction(self) -> "_Tx":
        return _Tx(self.db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, et: object, ev: object, tb: object) -> None:
        if et is None:
            self.db.execute("COMMIT")
            return
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass                     # SQLite already rolled back (e.g. disk full); keep the original error


def _point(r: tuple[Any, ...]) -> PointRecord:
    """A row as a record; a damaged row still comes back (with ``damaged`` saying why) so that it can be named."""
    damaged: list[str] = []
    try:
        summary = json.loads(r[10])
        if not isinstance(summary, dict):
            raise ValueError("not an object")
    except (TypeError, ValueError) as exc:
        summary = {}
        damaged.append(f"summary is not valid JSON ({exc})")
    for i, name, typ in ((1, "vm", str), (2, "created", str), (5, "pause_ms", (int, float)),
                         (6, "logical_bytes", int), (9, "manifest", str)):
        if not isinstance(r[i], typ):
            damaged.append(f"{name} is {r[i]!r}")
    return PointRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], summary,
                       "; ".join(damaged) or None)
