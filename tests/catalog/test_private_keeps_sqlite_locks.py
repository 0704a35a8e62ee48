"""Making the catalog private must not drop this process's SQLite locks: closing any descriptor of a file releases
every POSIX lock the process holds on it, so opening the database or its -shm to chmod it let another process write
while this one held the write lock (and could reset a -shm still mapped here: a backup died of SIGBUS)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cutpoint.catalog.sqlite import connect, make_private

TRY_WRITE = r'''
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
try:
    db.execute("BEGIN IMMEDIATE")
    print("got the write lock")
except sqlite3.OperationalError as exc:
    print("refused:", exc)
'''


def test_make_private_keeps_the_write_lock_of_an_open_connection(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    db = connect(path, "CREATE TABLE IF NOT EXISTS t (x)", "the catalog")
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO t VALUES (1)")
    make_private(path, "the catalog")                   # as a second table owner's connect() does
    r = subprocess.run([sys.executable, "-c", TRY_WRITE, str(path)], capture_output=True, text=True, timeout=30)
    db.execute("COMMIT")
    db.close()
    assert r.stdout.startswith("refused:"), r.stdout + r.stderr
