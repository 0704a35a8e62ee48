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
