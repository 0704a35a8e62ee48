"""Vaults of format v2, made by cutpoint before format v3 (tests/vault/fixtures, built with the code of commit
a647f4a: one point of VM 'web', disk 'd' of 3.8 MiB in 1 MiB chunks), keep opening: they restore byte-identical,
verify --read-data clean, and take new backups in their own (v2) format. vault info says what they lack."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.helpers import cutpoint
from tests.security.util import FIXTURES, copy_fixture

POINT = "20260101T000000Z-0a0b"


@pytest.mark.parametrize("name", ["v2-plain", "v2-encrypted"])
def test_v2_vault_restores_and_verifies(tmp_path: Path, monkeypatch, name: str) -> None:
    monkeypatch.setenv("CUTPOINT_PASSPHRASE", "fixture passphrase")
    root = copy_fixture(name, tmp_path / name)
    monkeypatch.setenv("CUTPOINT_VAULT", str(root))
    cfg = json.loads((root / "config.json").read_text())
    assert cfg["version"] == 2 and "mac" not in cfg
    r = cutpoint("verify", "--read-data", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["ok"]
    out = tmp_path / "out"
    cutpoint("restore", "web", POINT, "--to", str(out), check=True)
    [img] = list(out.iterdir())
    assert hashlib.sha256(img.read_bytes()).hexdigest() == (FIXTURES / "v2-disk-d.sha256").read_text().strip()
    info = json.loads(cutpoint("vault", "info", "--json", check=True).out)
    assert info["version"] == 2
    assert any("config.json" in g for g in info["not_protected_against"])
    if name == "v2-plain":
        assert not info["authenticated"]
        assert any("unkeyed checksums" in g for g in info["not_protected_against"])
    else:
        assert info["authenticated"] and info["encryption"]["cipher"] == "aes-256-gcm"


@pytest.mark.parametrize("name", ["v2-plain", "v2-encrypted"])
def test_v2_vault_takes_backups_in_v2(bare_qemu, tmp_path: Path, monkeypatch, name: str) -> None:
    """A v2 vault keeps its format: a full and an incremental go in as v2 (a chunk file each, no packs), restore
    byte-identical and verify, and the fixture's own point is untouched."""
    from tests.vault.util import assert_sound, backup, change, snapshot, two_disk_vm

    monkeypatch.setenv("CUTPOINT_PASSPHRASE", "fixture passphrase")
    root = copy_fixture(name, tmp_path / name)
    monkeypatch.setenv("CUTPOINT_VAULT", str(root))
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    change(vm, 0x21)
    p2 = backup()
    assert p2["mode"] == "incremental", p2
    assert json.loads((root / "config.json").read_text())["version"] == 2
    assert not (root / "data").exists() and any((root / "chunks").rglob("*"))
    assert_sound({p1: at_p1, p2["point"]: snapshot(images)}, tmp_path)
    out = tmp_path / "fixture-point"
    cutpoint("restore", "web", POINT, "--to", str(out), check=True)
    [img] = list(out.iterdir())
    assert hashlib.sha256(img.read_bytes()).hexdigest() == (FIXTURES / "v2-disk-d.sha256").read_text().strip()
