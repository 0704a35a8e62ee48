"""What encryption promises, checked on the files themselves: a real KDF guards the key, chunk ids and files do not
reveal content, manifests are sealed and carry the key fingerprint, a blob moved under another name is refused, and
format versions and tampered configs are refused with one line."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from cutpoint.errors import IntegrityError
from cutpoint.vault.vault import Vault
from tests.helpers import commit_synthetic_point, cutpoint, synthetic_manifest
from tests.vault.util import encrypted_vault, files, one_line_error, open_vault, pack_of, vault_dir


@pytest.mark.no_vault
def test_key_file_uses_a_real_kdf_and_stays_private(monkeypatch) -> None:
    monkeypatch.setenv("CUTPOINT_PASSPHRASE", "pw")
    out = cutpoint("vault", "init", "--json", check=True).out          # encrypted by default
    cfg = json.loads(out)
    key = json.loads((vault_dir() / "key.json").read_text())
    assert key["kdf"]["name"] == "scrypt" and key["kdf"]["n"] >= 1 << 17 and key["kdf"]["r"] == 8
    assert key["fingerprint"] == cfg["encryption"]["key_fingerprint"] and cfg["chunk_id"] == "blake3-keyed"
    assert (vault_dir() / "key.json").stat().st_mode & 0o077 == 0
    assert cfg["version"] == 4 and cfg["not_protected_against"] and cfg["authenticated"]
    assert not any("confidentiality" in g for g in cfg["not_protected_against"])
    one_line_error(cutpoint("vault", "init", "--encrypt"), 2, "already a cutpoint vault")


@pytest.mark.no_vault
def test_init_without_a_passphrase_writes_nothing(monkeypatch) -> None:
    monkeypatch.delenv("CUTPOINT_PASSPHRASE", raising=False)
    one_line_error(cutpoint("vault", "init"), 2, "needs a passphrase", "--passphrase-file")
    assert not vault_dir().exists()
    one_line_error(cutpoint("vault", "init", "--encrypt"), 2, "needs a passphrase", "--passphrase-file")
    assert not vault_dir().exists()
    empty = vault_dir().parent / "empty"
    empty.write_text("\n")
    one_line_error(cutpoint("vault", "init", "--encrypt", "--passphrase-file", str(empty)), 2, "is empty")
    assert not vault_dir().exists()


def test_chunks_and_manifests_reveal_nothing(monkeypatch) -> None:
    encrypted_vault(monkeypatch)
    v = open_vault()
    data = b"secret disk block " * (v.chunk_size // 18)
    m = synthetic_manifest(v, "20240101T000000Z-abcd", "web-server", "2024-01-01T00:00:00.000Z",
                           {"system-disk": [data]}, sizes={"system-disk": len(data)})
    cid = m.disks[0].chunks[0]
    assert cid is not None and cid != hashlib.sha256(data).hexdigest()
    rec = v.commit_point(m, {})
    assert v.chunks.get(cid) == data
    stored = [p.read_bytes() for sub in ("data", "index", "points") for p in files(sub)]
    assert stored and all(b"secret" not in b and b"system-disk" not in b and cid.encode() not in b
                          and bytes.fromhex(cid) not in b for b in stored)     # packs, index objects, manifests
    path, off, length = pack_of(cid)
    assert bytes.fromhex(v.sealer.fingerprint) in path.read_bytes()[off:off + 21]
    assert v.manifest(rec).key_fingerprint == v.sealer.fingerprint

    a, b = os.urandom(v.chunk_size), os.urandom(v.chunk_size)   # a blob moved under another id is refused
    ca, _ = v.chunks.put(a)
    cb, _ = v.chunks.put(b)
    v.chunks.flush()
    pa, oa, la = pack_of(ca)
    pb, ob, lb = pack_of(cb)
    assert la == lb
    raw = bytearray(pb.read_bytes())
    raw[ob:ob + lb] = pa.read_bytes()[oa:oa + la]
    pb.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="authentication failed"):
        open_vault().chunks.get(cb)
    v.close()


def test_old_formats_and_tampered_configs_are_refused(monkeypatch) -> None:
    cfg_path = vault_dir() / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "version": 1}))
    one_line_error(cutpoint("points"), 5, "format v1", "vault init")
    cfg_path.write_text(json.dumps({**cfg, "version": 5}))
    one_line_error(cutpoint("points"), 5, "format v5", "v2 to v4")
    cfg_path.write_text(json.dumps(cfg))
    (vault_dir() / "key.json").write_text("{}")              # a key file in a vault that claims to be plain
    one_line_error(cutpoint("points"), 6, "says the vault is unencrypted but it has a key file")


def test_downgrade_to_plaintext_is_refused(monkeypatch) -> None:
    """Deleting key.json and setting the config's encryption to null must not make later backups write plaintext."""
    encrypted_vault(monkeypatch)
    v = open_vault()
    commit_synthetic_point(v, "20240101T000000Z-abcd", "web", "2024-01-01T00:00:00.000Z",
                           {"d": [b"block " * 1000]}, sizes={"d": 6000})
    v.close()
    cfg_path = vault_dir() / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "encryption": None, "chunk_id": "sha256"}))
    (vault_dir() / "key.json").unlink()
    before = sorted(p for p in vault_dir().rglob("*") if p.is_file())
    one_line_error(cutpoint("points"), 6, "says the vault is unencrypted but its points are encrypted")
    with pytest.raises(IntegrityError, match="config.json was altered"):
        Vault.open(vault_dir())
    assert sorted(p for p in vault_dir().rglob("*") if p.is_file()) == before


def test_init_takes_the_directory_as_an_argument(tmp_path) -> None:
    d = tmp_path / "v2"
    cfg = json.loads(cutpoint("vault", "init", str(d), "--no-encrypt", "--json", check=True).out)
    assert cfg["vault"] == str(d) and (d / "config.json").exists() and cfg["encryption"] is None
    assert cfg["authenticated"] and any("confidentiality" in g for g in cfg["not_protected_against"])
    info = cutpoint("vault", "info", "--vault", str(d), check=True).out
    assert "not encrypted, authenticated" in info and "does not protect against: confidentiality" in info
    one_line_error(cutpoint("vault", "init", str(tmp_path / "c"), "--encrypt", "--no-encrypt"), 2, "contradict")
    one_line_error(cutpoint("vault", "init", str(tmp_path / "c"), "--no-encrypt", "--chunk-size", "3M"), 2,
                   "power of two")
    assert not (tmp_path / "c").exists()
    one_line_error(cutpoint("vault", "init", str(tmp_path / "a"), "--vault", str(tmp_path / "b")), 2,
                   "two vault directories")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
