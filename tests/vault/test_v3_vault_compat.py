"""Vaults of format v3 (a file per 4 MiB chunk, made by the previous release) keep working after v4 became the
default: backups go on in v3 (full, then incremental), and restore, verify --read-data, prune and gc work on them,
while a new vault is v4. There is no in-place upgrade (docs/format.md §18)."""

from __future__ import annotations

import json
from pathlib import Path

from cutpoint.vault.chunks import ChunkStore
from tests.helpers import cutpoint
from tests.vault.util import (assert_sound, backup, change, files, gc, open_vault, snapshot, two_disk_vm, v3_vault,
                              vault_dir)


def test_a_v3_vault_takes_backups_in_v3_and_restores(bare_qemu, tmp_path: Path) -> None:
    v3_vault()
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()
    at1 = snapshot(images)
    change(vm, 0x31)
    p2 = backup()
    at2 = snapshot(images)
    assert p1["mode"] == "full" and p2["mode"] == "incremental"
    cfg = json.loads((vault_dir() / "config.json").read_text())
    assert cfg["version"] == 3 and cfg["chunk_size"] == 4 << 20
    v = open_vault()
    assert isinstance(v.chunks, ChunkStore)
    m = v.manifest(v.catalog.point("v", p2["point"]))
    assert m.format == 2 and isinstance(m.disks[0].chunks, list)
    v.close()
    assert files("chunks") and not (vault_dir() / "data").exists()
    assert_sound({p1["point"]: at1, p2["point"]: at2}, tmp_path)
    r = cutpoint("prune", "v", "--keep-last", "1", "--json")
    assert r.code == 0, r.err
    g = gc()
    assert g["chunks_seen"] > 0 and g["packs_seen"] == 0          # the v3 sweep, by chunk files
    assert_sound({p2["point"]: at2}, tmp_path)
    info = json.loads(cutpoint("vault", "info", "--json", check=True).out)
    assert info["version"] == 3


def test_a_new_vault_is_v4(tmp_path: Path) -> None:
    root = tmp_path / "new"
    cutpoint("vault", "init", str(root), "--no-encrypt", check=True)
    cfg = json.loads((root / "config.json").read_text())
    assert (cfg["version"], cfg["chunk_size"], cfg["chunk_id"], cfg["pack_size"]) == (4, 64 << 10, "blake3-keyed",
                                                                                       16 << 20)
    assert (root / "data").is_dir() and (root / "index").is_dir() and not (root / "chunks").exists()
