"""Immutability of a local-directory vault (docs/format.md §19): stored in the authenticated config (an edit is caught,
a shortening refused), prune keeps and reports the points younger than it, delete refuses them, gc reports what it
kept; --object-lock is refused for a local directory; 'vault info' says it protects against mistakes, not root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cutpoint
from tests.vault.util import (age_deletion, gc, one_line_error, points, protected_vault, read_back, synthetic_points,
                              tree, vault_dir)


@pytest.mark.both_formats
def test_prune_keeps_and_reports_points_younger_than_the_immutability(vault_format: int, tmp_path: Path) -> None:
    protected_vault(vault_format, immutable_days=7)
    disks = synthetic_points([30, 20, 5, 3, 1])
    old1, old2, young1, young2, newest = disks
    r = json.loads(cutpoint("prune", "v", "--keep-last", "1", "--json", check=True).out)
    assert r["immutable_days"] == 7 and r["kept_by_immutability"] == [young2, young1]
    assert {x["point"] for x in r["remove"]} == {old1, old2}
    kept = {x["point"]: x["reasons"] for x in r["keep"]}
    assert kept[young1][0].startswith("immutable until ") and kept[newest] == ["last 1"]
    assert points() == [young1, young2, newest]

    text = cutpoint("prune", "v", "--keep-last", "1", "--dry-run", check=True).out
    assert "immutability kept 2 point(s) younger than 7 days" in text and "immutable until" in text
    for p in (young1, young2, newest):
        assert read_back(p, tmp_path / p) == disks[p]


def test_delete_before_the_immutability_is_refused_and_changes_nothing() -> None:
    protected_vault(4, immutable_days=7)
    old, young = synthetic_points([8, 6])
    before = tree(vault_dir())
    one_line_error(cutpoint("delete", young), 12, f"point {young} is immutable until", "7 days")
    assert points() == [old, young]
    after = tree(vault_dir())
    assert {k: v for k, v in after.items() if not k.startswith("locks/")} == \
        {k: v for k, v in before.items() if not k.startswith("locks/")}
    cutpoint("delete", old, check=True)                   # old enough
    assert points() == [young]


def test_gc_keeps_and_reports_an_expired_soft_deleted_point_still_immutable(tmp_path: Path) -> None:
    """Immutability lengthened after a point was deleted: its soft delete expires, immutability still holds it."""
    protected_vault(4, immutable_days=0, soft_delete_days=1)
    disks = synthetic_points([3, 1])
    p1, p2 = disks
    cutpoint("delete", p1, check=True)
    cutpoint("vault", "protect", "--immutable-days", "10", check=True)
    age_deletion("v", p1, 2)
    res = gc()
    assert res["kept_immutable"] == [p1] and res["purged"] == [] and res["immutable_days"] == 10
    out = cutpoint("gc", "--grace", "0", "--dry-run", check=True).out
    assert "immutability kept 1 expired soft-deleted point(s) younger than 10 days" in out
    assert not json.loads(cutpoint("points", "--deleted", "--json", check=True).out)[0]["problem"]


def test_config_edit_shortening_protection_is_caught_by_its_mac() -> None:
    protected_vault(4, immutable_days=7, soft_delete_days=14)
    cfg_path = vault_dir() / "config.json"
    good = cfg_path.read_text()
    for field, value in (("immutable_days", 0), ("soft_delete_days", 0), ("soft_delete_days", 1)):
        cfg = json.loads(good)
        cfg[field] = value
        cfg_path.write_text(json.dumps(cfg))
        for cmd in (("prune", "v", "--keep-last", "1"), ("gc",), ("points", "--deleted")):
            one_line_error(cutpoint(*cmd), 6, "config.json was altered")
    cfg = json.loads(good)
    del cfg["immutable_days"]                            # dropping the field is an edit too
    cfg_path.write_text(json.dumps(cfg))
    one_line_error(cutpoint("gc"), 6, "config.json was altered")
    cfg_path.write_text(good)
    assert json.loads(cutpoint("vault", "info", "--json", check=True).out)["immutable_days"] == 7


def test_an_immutable_vault_refuses_to_shorten_its_protection_and_may_lengthen_it() -> None:
    protected_vault(4, immutable_days=7, soft_delete_days=14)
    one_line_error(cutpoint("vault", "protect", "--soft-delete-days", "0"), 12, "soft delete cannot be switched off")
    one_line_error(cutpoint("vault", "protect", "--soft-delete-days", "13"), 12, "cannot be switched off or shortened")
    one_line_error(cutpoint("vault", "protect", "--immutable-days", "6"), 12, "immutability cannot be reduced")
    info = json.loads(cutpoint("vault", "info", "--json", check=True).out)
    assert (info["immutable_days"], info["soft_delete_days"]) == (7, 14)
    cutpoint("vault", "protect", "--immutable-days", "30", "--soft-delete-days", "60", check=True)
    info = json.loads(cutpoint("vault", "info", "--json", check=True).out)          # re-sealed: still opens
    assert (info["immutable_days"], info["soft_delete_days"]) == (30, 60)
    cutpoint("points", check=True)
    # a vault that is not immutable may switch soft delete off
    protected_vault(4, immutable_days=0, soft_delete_days=14)
    cutpoint("vault", "protect", "--soft-delete-days", "0", check=True)
    assert json.loads(cutpoint("vault", "info", "--json", check=True).out)["soft_delete_days"] == 0


@pytest.mark.no_vault
def test_init_stores_protection_and_refuses_object_lock_on_a_directory(tmp_path: Path) -> None:
    d = tmp_path / "v1"
    one_line_error(cutpoint("vault", "init", str(d), "--no-encrypt", "--immutable-days", "7", "--object-lock",
                            "compliance"), 2, "--object-lock is for vaults on S3", "s3://", "drop --object-lock")
    assert not d.exists()
    one_line_error(cutpoint("vault", "init", str(d), "--no-encrypt", "--immutable-days", "-1"), 2, "--immutable-days")
    assert not d.exists()
    info = json.loads(cutpoint("vault", "init", str(d), "--no-encrypt", "--immutable-days", "7", "--json",
                               check=True).out)
    assert (info["immutable_days"], info["soft_delete_days"]) == (7, 14)          # soft delete: 14 days by default
    assert any("mistakes, not against root" in s for s in info["not_protected_against"])
    text = cutpoint("vault", "info", "--vault", str(d), check=True).out
    assert "before it is 7 days old" in text and "recoverable 14 days" in text and "not against root" in text
    off = json.loads(cutpoint("vault", "init", str(tmp_path / "v2"), "--no-encrypt", "--soft-delete-days", "0",
                              "--json", check=True).out)
    assert (off["immutable_days"], off["soft_delete_days"]) == (0, 0)
