"""`vault rebuild-catalog` (format v4) rebuilds this host's catalog from the vault's manifests alone: a manifest
that does not open is left out, named, and makes the command fail; soft-deleted points stay soft-deleted."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import cutpoint
from tests.vault.util import points, protected_vault, read_back, synthetic_points, vault_dir


def test_rebuild_catalog_names_a_damaged_manifest_and_keeps_soft_deleted_points_out(tmp_path: Path) -> None:
    protected_vault(4, soft_delete_days=14)
    disks = synthetic_points([3, 2, 1])
    gone, broken, good = disks
    cutpoint("delete", gone, check=True)
    m = vault_dir() / "points" / "v" / f"{broken}.manifest"
    data = bytearray(m.read_bytes())
    data[len(data) // 2] ^= 0xFF
    m.write_bytes(bytes(data))

    r = cutpoint("vault", "rebuild-catalog", "--json")
    assert r.code == 6, (r.code, r.err)
    out = json.loads(r.out)
    assert out["points"] == 1 and len(out["problems"]) == 1 and broken in out["problems"][0], out
    assert r.err.startswith("cutpoint: error: 1 manifest(s) could not be read") and r.err.count("\n") == 1, r.err
    assert points() == [good]
    assert read_back(good, tmp_path / "good") == disks[good]
    deleted = json.loads(cutpoint("points", "--deleted", "--json", check=True).out)
    assert [d["point"] for d in deleted] == [gone]
    cutpoint("undelete", gone, check=True)
    assert points() == [gone, good] and read_back(gone, tmp_path / "gone") == disks[gone]
