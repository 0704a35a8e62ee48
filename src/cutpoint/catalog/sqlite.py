"""Opening the catalog's SQLite file the one way every table owner needs: WAL (readers never block the writer),
``synchronous=FULL`` (a committed row survives a crash), a busy timeout for concurrent processes, and its schema.

The file is private (0600): the catalog names VMs, disks and sizes in plain text even in an encrypted vault. SQLite
creates a database 0644 whatever the umask and gives its -wal, -shm and -journal the database file's mode, so the file
is created 0600 first (never through a symlink) and one left open by an older version is closed with its side files."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from ..errors import VaultError


def connect(path: Path, schema: str, what: str, *, threads: bool = False) -> sqlite3.Connection:
    """A connection with ``schema`` applied; ``threads`` allows use from several threads (callers serialize)."""
    make_private(path, what)
    try:
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=not threads)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
    except sqlite3.Error as exc:
        raise VaultError(f"cannot open {what} in {path}: {exc}") from exc
    return db


SIDE_FILES = ("-wal", "-shm", "-journal")


def make_private(path: Path, what: str) -> None:
    """``path`` exists as a regular file, mode 0600 at most; its side files too.

    No descriptor of an existing database or side file is opened here: closing any descriptor of a file drops every
    POSIX lock this process holds on it, SQLite's included (another connection of this process then looks absent to
    other processes, which may reset the -shm it has mapped: SIGBUS). So an existing file is tightened by path, after
    ``lstat`` says it is a regular file (the vault directory is 0700: nobody else can swap it in between)."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise VaultError(f"cannot create {what} in {path}: {exc.strerror or exc}; check the path and its "
                         "permissions") from exc
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode):
            raise VaultError(f"{what} in {path} is not a regular file (a symbolic link is refused); check the path")
        _tighten(path, st)
        for side in SIDE_FILES:
            sp = Path(f"{path}{side}")
            try:
                sst = sp.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(sst.st_mode):
                _tighten(sp, sst)
    except OSError as exc:
        raise VaultError(f"cannot make {what} in {path} private: {exc.strerror or exc}") from exc


def _tighten(path: Path, st: os.stat_result) -> None:
    if st.st_mode & 0o077:
        os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
