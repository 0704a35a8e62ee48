"""kill -9 of 'cutpoint delete' and 'cutpoint undelete' between each of their steps (docs/format.md §19.3) loses no
point: afterwards the point is either visible or listed as soft-deleted (exactly the state the write order
promises), gc with no grace frees none of its data, repeating the command finishes the job, and the point reads back
byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cutpoint
from tests.vault.util import (gc, killed_at, points, protected_vault, read_back, synthetic_points, vault_dir,
                              verified)

# stage -> is the point visible after a kill there?
DELETE_STAGES = {"delete-recorded": True, "prune-commit": True, "after-prune-commit": False}
UNDELETE_STAGES = {"undelete-moved": False, "catalog-commit": False, "after-undelete-commit": True}


def _deleted() -> list[str]:
    return [d["point"] for d in json.loads(cutpoint("points", "--deleted", "--json", check=True).out)]


def _state_after_kill(p1: str, p2: str, visible: bool) -> None:
    if visible:
        assert points() == [p1, p2] and _deleted() == []
    else:
        assert points() == [p2] and _deleted() == [p1]
    res = gc()                                                 # grace 0: only the roots keep data
    assert res["removed_manifests"] == 0 and res["soft_deleted"] == ([] if visible else [p1])
    assert res["removed_records"] == (1 if visible else 0)       # a visible point's stale deletion record


def _all_read_back(disks: dict[str, bytes], tmp_path: Path, tag: str) -> None:
    assert points() == list(disks)
    for p, data in disks.items():
        assert read_back(p, tmp_path / f"{tag}-{p}") == data, (tag, p)
    assert verified().ok


@pytest.mark.both_formats
def test_kill_during_delete_loses_nothing(vault_format: int, tmp_path: Path) -> None:
    for stage, visible in DELETE_STAGES.items():
        protected_vault(vault_format, soft_delete_days=14)
        disks = synthetic_points([2, 1])
        p1, p2 = disks
        killed_at(stage, "delete", p1)
        _state_after_kill(p1, p2, visible)
        if visible:
            cutpoint("delete", p1, check=True)                 # the delete can simply be repeated
            assert _deleted() == [p1]
        cutpoint("undelete", p1, check=True)
        _all_read_back(disks, tmp_path, stage)
        assert list((vault_dir() / "deleted" / "v").iterdir()) == []


@pytest.mark.both_formats
def test_kill_during_undelete_loses_nothing(vault_format: int, tmp_path: Path) -> None:
    for stage, visible in UNDELETE_STAGES.items():
        protected_vault(vault_format, soft_delete_days=14)
        disks = synthetic_points([2, 1])
        p1, p2 = disks
        cutpoint("delete", p1, check=True)
        killed_at(stage, "undelete", p1)
        _state_after_kill(p1, p2, visible)
        if not visible:
            cutpoint("undelete", p1, check=True)               # the undelete can simply be repeated
        _all_read_back(disks, tmp_path, stage)
        assert list((vault_dir() / "deleted" / "v").iterdir()) == []
