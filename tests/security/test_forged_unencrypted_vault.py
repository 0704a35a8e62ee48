"""An attacker who can write the vault directory of an unencrypted vault replaces a chunk with content of their own
and re-seals the manifest that names it, exactly as the code of format v2 seals (an unkeyed SHA-256 checksum, which
anyone can recompute). verify --read-data and restore must refuse the forged point: the seals of an unencrypted v3
vault are HMACs under a key this host keeps outside the vault."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import zstandard

from cutpoint.vault.chunks import ChunkStore
from cutpoint.vault.crypto import HEADER, Sealer
from cutpoint.vault.manifest import MAGIC as MANIFEST_MAGIC
from tests.helpers import cutpoint
from tests.vault.util import backup, chunk_of, one_line_error, open_vault, pack_of, two_disk_vm, v3_vault, vault_dir


def _payload(blob: bytes) -> bytes:
    """The manifest's plaintext payload: header, 32-byte tag, zstd JSON (unencrypted vaults hide nothing)."""
    return zstandard.ZstdDecompressor().decompress(blob[HEADER.size + 32:], max_output_size=1 << 26)


@pytest.mark.parametrize("seal", ["checksum", "forged-tag"])
def test_forged_chunk_and_resealed_manifest_are_refused(bare_qemu, tmp_path: Path, seal: str) -> None:
    """Format v3: a chunk file and a manifest that lists chunk ids."""
    v3_vault()
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    old = chunk_of(p1, "da", 0)

    # the attacker's chunk: their own 4 MiB, stored the way format v2 stores chunks (sha256 id, checksum seal)
    evil = b"EVIL" * (1 << 20)
    attacker = ChunkStore(vault_dir() / "chunks", Sealer(None))
    cid, _ = attacker.put(evil)
    assert cid == hashlib.sha256(evil).hexdigest()

    path = vault_dir() / "points" / "v" / f"{p1}.manifest"
    blob = path.read_bytes()
    doc = json.loads(_payload(blob))
    da = next(d for d in doc["disks"] if d["name"] == "da")
    da["chunks"] = [cid if c == old else c for c in da["chunks"]]
    packed = zstandard.ZstdCompressor().compress(json.dumps(doc, indent=1, sort_keys=True).encode())
    aad = f"v/{p1}".encode()
    if seal == "checksum":                       # re-sealed with the unkeyed checksum of format v2
        doc["key_fingerprint"] = None
        packed = zstandard.ZstdCompressor().compress(json.dumps(doc, indent=1, sort_keys=True).encode())
        path.write_bytes(Sealer(None).seal(MANIFEST_MAGIC, packed, aad))
    else:                                        # the original header kept, a tag computed without the key
        header = blob[:HEADER.size]
        path.write_bytes(header + hashlib.sha256(header + aad + packed).digest() + packed)

    r = cutpoint("verify", "--read-data")
    assert r.code == 6, (r.code, r.out, r.err)
    assert p1 in r.err
    out = tmp_path / "r"
    one_line_error(cutpoint("restore", "v", p1, "--to", str(out)), 6, p1)
    assert not out.exists() or list(out.iterdir()) == []


def test_forged_blob_in_a_pack_is_refused(bare_qemu, tmp_path: Path) -> None:
    """Format v4: an unencrypted blob carries no MAC; its keyed content id is its authentication. An attacker who
    rewrites a chunk's bytes inside a pack, with a well-formed header and the same length, is caught by that id."""
    from cutpoint.vault import blob as blobs
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    cid = chunk_of(p1, "da", 0)
    path, off, length = pack_of(cid)
    v = open_vault()
    header = HEADER.pack(blobs.MAGIC, 3, bytes.fromhex(v.sealer.fingerprint))
    v.close()
    evil = (header + b"\x00" + b"EVIL" * length)[:length]               # scheme 3, stored codec, attacker's bytes
    raw = bytearray(path.read_bytes())
    raw[off:off + length] = evil
    path.write_bytes(bytes(raw))
    r = cutpoint("verify", "--read-data")
    assert r.code == 6 and p1 in r.err, (r.code, r.out, r.err)
    out = tmp_path / "r"
    one_line_error(cutpoint("restore", "v", p1, "--to", str(out)), 6, cid, "damaged")   # marked by the verify
    assert not out.exists() or list(out.iterdir()) == []
