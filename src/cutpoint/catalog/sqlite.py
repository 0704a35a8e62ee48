"""Opening the catalog's SQLite file the one way every table owner needs: WAL (readers never block the writer),
``synchronous=FULL`` (a committed row survives a crash), a busy timeout for concurrent processes, and its schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import VaultError


def connect(path: Path, schema: str, what: str, *, threads: bool = False) -> sqlite3.Connection:
    """A connection with ``schema`` applied; ``threads`` allows use from several threads (callers serialize)."""
    try:
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=not threads)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
    except sqlite3.Error as exc:
        raise VaultError(f"cannot open {what} in {path}: {exc}") from exc
    return db
