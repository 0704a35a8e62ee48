"""Another vault's key file, a damaged key file, a missing one: each is one clear line and a non-zero exit with
nothing written; an exported copy of the right key brings the vault back, byte-identical restores included."""

from __future__ import annotations

import json
from pathlib import Path

from cutpoint.vault.vault import Vault
from tests.helpers import cutpoint
from tests.vault.util import (backup, encrypted_vault, one_line_error, restored, snapshot, tree, two_disk_vm,
                              vault_dir, verified)


def test_wrong_key_file(bare_qemu, tmp_path: Path, monkeypatch) -> None:
    encrypted_vault(monkeypatch, "same passphrase")
    other = tmp_path / "other-vault"
    Vault.create(other, encrypt=True)                   # same passphrase, different key
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    mine, theirs = tmp_path / "mine.key", tmp_path / "theirs.key"
    cutpoint("vault", "key", "export", "--to", str(mine), check=True)
    cutpoint("vault", "key", "export", "--vault", str(other), "--to", str(theirs), check=True)
    assert mine.stat().st_mode & 0o077 == 0
    key = vault_dir() / "key.json"
    before = tree(vault_dir())

    monkeypatch.setenv("CUTPOINT_KEY_FILE", str(theirs))
    one_line_error(cutpoint("restore", "v", p1, "--to", str(tmp_path / "r0")), 10, "belongs to another vault")
    monkeypatch.delenv("CUTPOINT_KEY_FILE")
    one_line_error(cutpoint("vault", "key", "import", str(theirs)), 10, "belongs to another vault")
    assert tree(vault_dir()) == before and not (tmp_path / "r0").exists()

    key.write_text(key.read_text()[:100])               # damaged
    one_line_error(cutpoint("backup", "v"), 5, "key file", "damaged", "vault key import")
    key.unlink()                                        # lost
    one_line_error(cutpoint("backup", "v"), 5, "does not exist", "vault key import")
    monkeypatch.setenv("CUTPOINT_PASSPHRASE", "not the passphrase")
    one_line_error(cutpoint("vault", "key", "import", str(mine)), 10, "wrong passphrase")
    assert not key.exists()
    monkeypatch.setenv("CUTPOINT_PASSPHRASE", "same passphrase")
    hostile = tmp_path / "hostile.key"                  # a key file asking scrypt for 1 TiB is refused unrun
    doc = json.loads(mine.read_text())
    doc["kdf"]["n"] = 1 << 30
    hostile.write_text(json.dumps(doc))
    one_line_error(cutpoint("vault", "key", "import", str(hostile)), 5, "damaged", "out of range")
    assert not key.exists()

    one_line_error(cutpoint("backup", "v", "--key-file", str(theirs)), 10, "belongs to another vault")
    cutpoint("backup", "v", "--key-file", str(mine), check=True)       # a key kept outside the vault works
    cutpoint("vault", "key", "import", str(mine), check=True)
    assert key.read_bytes() == mine.read_bytes()
    assert verified().ok
    assert restored(p1, tmp_path / "r1") == at_p1
