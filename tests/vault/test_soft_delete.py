"""Soft delete (docs/format.md §19) on real vaults of both formats, points made without a VM: a deleted or pruned
point is listed by 'points --deleted' with when it expires, gc keeps its data while the soft delete lasts, 'undelete'
brings it back byte-identical, and after expiry gc purges it and frees its data."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.helpers import cutpoint
from tests.vault.util import (age_deletion, files, gc, one_line_error, points, protected_vault, read_back,
                              stored_objects, synthetic_points, verified, vault_dir)


def _when(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _deleted(vm: str | None = None) -> list[dict]:
    return json.loads(cutpoint("points", *([vm] if vm else []), "--deleted", "--json", check=True).out)


@pytest.mark.both_formats
def test_delete_then_undelete_restores_byte_identical(vault_format: int, tmp_path: Path) -> None:
    protected_vault(vault_format, soft_delete_days=14)
    disks = synthetic_points([3, 2, 1])
    p1, p2, p3 = disks
    stored = stored_objects()

    out = cutpoint("delete", p2, check=True).out
    assert f"deleted point {p2}" in out and f"cutpoint undelete {p2}" in out
    assert points() == [p1, p3]
    assert (vault_dir() / "deleted" / "v" / f"{p2}.manifest").is_file()
    assert not (vault_dir() / "points" / "v" / f"{p2}.manifest").exists()
    [d] = _deleted("v")
    assert d["point"] == p2 and d["vm"] == "v" and d["problem"] is None
    assert _when(d["expires"]) - _when(d["deleted"]) == timedelta(days=14)
    assert p2 in cutpoint("points", "--deleted", check=True).out
    assert p2 not in cutpoint("points", "v", check=True).out

    res = gc()                                      # grace 0: only the soft delete keeps p2's data
    assert res["soft_deleted"] == [p2] and res["purged"] == [] and res["points"] == 2
    assert res["removed_chunks"] == 0 and res["packs_removed"] == 0
    if vault_format < 4:
        assert stored_objects() == stored           # v4 may merge the small packs; the read-back below proves it

    assert p2 in cutpoint("undelete", p2[:12], check=True).out      # a unique prefix is enough
    assert points() == [p1, p2, p3] and _deleted() == []
    assert files("deleted", "*") == []
    for p, data in disks.items():
        assert read_back(p, tmp_path / p) == data, p
    assert verified().ok
    one_line_error(cutpoint("undelete", p2), 3, "no soft-deleted point", "points --deleted")


@pytest.mark.both_formats
def test_gc_keeps_soft_deleted_data_until_expiry_then_frees_it(vault_format: int, tmp_path: Path) -> None:
    protected_vault(vault_format, soft_delete_days=14)
    disks = synthetic_points([2, 1])
    p1, p2 = disks
    cutpoint("delete", p1, check=True)

    age_deletion("v", p1, 13.9)                      # still inside the window
    res = gc()
    assert res["soft_deleted"] == [p1] and res["removed_chunks"] == 0 and res["packs_removed"] == 0
    assert [d["point"] for d in _deleted()] == [p1]

    age_deletion("v", p1, 14.1)                      # expired
    dry = json.loads(cutpoint("gc", "--grace", "0", "--dry-run", "--json", check=True).out)
    assert dry["purged"] == [p1] and [d["point"] for d in _deleted()] == [p1]     # dry run: nothing changed
    before = sum(p.stat().st_size for p in stored_objects())
    res = gc()
    assert res["purged"] == [p1] and res["soft_deleted"] == [] and res["freed_bytes"] > 0
    assert sum(p.stat().st_size for p in stored_objects()) < before
    if vault_format < 4:
        assert res["removed_chunks"] == 2
    else:
        assert res["packs_removed"] + res["packs_repacked"] > 0
    assert _deleted() == [] and files("deleted", "*.manifest") == [] and files("deleted", "*.deleted") == []
    one_line_error(cutpoint("undelete", p1), 3, "no soft-deleted point")
    assert points() == [p2] and read_back(p2, tmp_path / "p2") == disks[p2] and verified().ok


def test_undelete_of_an_expired_point_is_refused_before_gc(tmp_path: Path) -> None:
    protected_vault(4, soft_delete_days=2)
    p1, p2 = synthetic_points([5, 1])
    cutpoint("delete", p1, check=True)
    age_deletion("v", p1, 3)
    one_line_error(cutpoint("undelete", p1), 3, "expired", "cannot be undeleted")
    assert points() == [p2]


@pytest.mark.both_formats
def test_prune_soft_deletes_and_undelete_brings_a_pruned_point_back(vault_format: int, tmp_path: Path) -> None:
    protected_vault(vault_format, soft_delete_days=14)
    disks = synthetic_points([3, 2, 1])
    p1, p2, p3 = disks
    r = json.loads(cutpoint("prune", "v", "--keep-last", "1", "--json", check=True).out)
    assert {x["point"] for x in r["remove"]} == {p1, p2} and r["soft_delete_days"] == 14
    assert points() == [p3] and {d["point"] for d in _deleted("v")} == {p1, p2}
    assert gc()["soft_deleted"] == [p1, p2]
    cutpoint("undelete", p1, check=True)
    assert points() == [p1, p3]
    assert read_back(p1, tmp_path / "p1") == disks[p1]


def test_without_soft_delete_a_deleted_point_is_gone_at_the_next_gc(tmp_path: Path) -> None:
    protected_vault(3, soft_delete_days=0)
    p1, p2 = synthetic_points([2, 1])
    out = cutpoint("delete", p1, check=True).out
    assert "keeps no soft-deleted points" in out
    assert points() == [p2] and _deleted() == [] and not (vault_dir() / "deleted").exists()
    assert gc()["removed_chunks"] == 2


def test_delete_refusals_leave_everything_as_it_was() -> None:
    protected_vault(4)
    p1, = synthetic_points([1])
    one_line_error(cutpoint("delete", "nosuch"), 3, "no restore point 'nosuch'", "cutpoint points")
    one_line_error(cutpoint("undelete", p1), 3, "no soft-deleted point")   # visible: nothing to undelete
    assert points() == [p1] and not (vault_dir() / "deleted").exists()


def test_a_planted_deletion_record_never_becomes_a_path(tmp_path: Path) -> None:
    """Vault contents are untrusted: a record whose row names a manifest outside points/ is refused by undelete, and
    names that are not valid point or VM names are not even listed."""
    protected_vault(4, soft_delete_days=14)
    p1, p2 = synthetic_points([2, 1])
    cutpoint("delete", p1, check=True)
    rec = vault_dir() / "deleted" / "v" / f"{p1}.deleted"
    doc = json.loads(rec.read_text())
    outside = tmp_path / "outside.manifest"
    doc["row"]["manifest"] = str(Path("..") / ".." / outside.relative_to("/"))
    rec.write_text(json.dumps(doc))
    one_line_error(cutpoint("undelete", p1), 6, "damaged", "names manifest")
    assert not outside.exists() and (vault_dir() / "deleted" / "v" / f"{p1}.manifest").is_file()
    assert points() == [p2]
    (vault_dir() / "deleted" / "-x").mkdir()
    (vault_dir() / "deleted" / "-x" / "y.deleted").write_text("{}")
    (vault_dir() / "deleted" / "v" / "..bad.deleted").write_text("{}")
    assert [d["point"] for d in _deleted()] == [p1]


@pytest.mark.parametrize("fmt", [3, 4], ids=["v3", "v4"])
def test_soft_delete_in_an_encrypted_vault(fmt: int, monkeypatch, tmp_path: Path) -> None:
    """The manifest moves sealed as it is (bound to <vm>/<point>, not to its directory): undelete and gc read it."""
    from tests.vault.util import vault_of_format
    vault_of_format(fmt, monkeypatch, encrypt=True)
    cutpoint("vault", "protect", "--soft-delete-days", "3", check=True)
    disks = synthetic_points([2, 1])
    p1, p2 = disks
    cutpoint("delete", p1, check=True)
    assert gc()["soft_deleted"] == [p1]
    cutpoint("undelete", p1, check=True)
    assert read_back(p1, tmp_path / "p1") == disks[p1] and verified().ok


def test_an_undeleted_points_row_comes_from_its_manifest_not_its_deletion_record() -> None:
    """The deletion record is not authenticated: rewritten to say the point was created in 2000 (or that it was
    app-consistent), undelete put that back into the catalog, and prune and immutability judged the point by it."""
    protected_vault(4, immutable_days=30, soft_delete_days=14)
    (p,) = synthetic_points([40])                   # past its immutability: it may be deleted
    before = _row(p)
    cutpoint("delete", p, check=True)
    record = vault_dir() / "deleted" / "v" / f"{p}.deleted"
    doc = json.loads(record.read_text())
    doc["row"].update(created="2000-01-01T00:00:00.000Z", consistency="app")
    record.write_text(json.dumps(doc))
    cutpoint("undelete", p, check=True)
    after = _row(p)
    assert (after.created, after.consistency) == (before.created, before.consistency), after


def _row(point: str):  # type: ignore[no-untyped-def]
    from tests.vault.util import open_vault
    v = open_vault()
    try:
        return v.catalog.point("v", point)
    finally:
        v.close()
