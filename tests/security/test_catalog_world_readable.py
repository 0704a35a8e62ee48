"""The catalog (VM names, disk names and sizes in plain text, even in an encrypted vault), its -wal/-shm, the key
file and everything else cutpoint writes into a vault were created 0644 in 0755 directories: any local user could read
them. Now whatever the caller's umask, files are 0600 and directories 0700; a catalog an older version left readable
is closed on the next open."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cutpoint.catalog.db import Catalog
from tests.helpers import cutpoint
from tests.security.util import backed_up_vm
from tests.vault.util import vault_dir


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(0o000)          # the CLI subprocess inherits it: the most permissive caller
    yield
    os.umask(old)


def _open_to_others(root: Path) -> list[str]:
    return [f"{p} {_mode(p):04o}" for p in [root, *sorted(root.rglob("*"))] if _mode(p) & 0o077]


def test_everything_written_into_the_vault_is_private(bare_qemu, tmp_path: Path, open_umask) -> None:
    backed_up_vm(bare_qemu, tmp_path)
    cutpoint("backup", "v", check=True)                        # an incremental: locks, chunks, manifests again
    assert (vault_dir() / "catalog.sqlite").exists() and list((vault_dir() / "data").rglob("*"))
    assert _open_to_others(vault_dir()) == []


def test_an_encrypted_vaults_key_and_catalog_are_private(tmp_path: Path, open_umask, monkeypatch) -> None:
    monkeypatch.setenv("CUTPOINT_PASSPHRASE", "correct horse battery staple")
    vault = tmp_path / "enc"
    cutpoint("vault", "init", "--vault", str(vault), "--encrypt", check=True)
    cutpoint("vm", "list", "--vault", str(vault), check=True)
    assert [p.name for p in vault.iterdir() if p.name.startswith("key")], list(vault.iterdir())
    assert _open_to_others(vault) == []


def test_the_catalogs_wal_and_shm_are_private_while_open(tmp_path: Path, open_umask) -> None:
    path = tmp_path / "catalog.sqlite"
    cat = Catalog(path)
    try:
        cat.db.execute("CREATE TABLE IF NOT EXISTS probe (x)")     # a write: SQLite makes -wal and -shm now
        side = [Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(p.exists() for p in side)
        assert {p.name: _mode(p) for p in [path, *side]} == {p.name: 0o600 for p in [path, *side]}
    finally:
        cat.close()


def test_a_catalog_left_readable_is_closed_on_open(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    Catalog(path).close()
    os.chmod(path, 0o644)                                       # as older versions made it
    Catalog(path).close()
    assert _mode(path) == 0o600
