"""config.json edited behind cutpoint's back.

A format-v2 vault (its config is not authenticated) whose chunk_size changes between two points: the next backup
must not build on the parent's chunk list (an IndexError, or chunks of the wrong size reused as if they fitted); it
reads in full and says why, and every point restores exactly. A v3 vault's config is authenticated: an edit is
refused at open, encrypted or not. Out-of-range parameters are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cutpoint
from tests.security.util import make_v2_vault
from tests.vault.util import (MiB, add_vm, change, encrypted_vault, one_line_error, restored, snapshot, tree,
                              two_disk_vm, vault_dir)


def _edit(**changes: object) -> None:
    p = vault_dir() / "config.json"
    p.write_text(json.dumps({**json.loads(p.read_text()), **changes}, indent=1))


@pytest.mark.parametrize("new_size", [1 * MiB, 8 * MiB], ids=["smaller", "larger"])
def test_chunk_size_edited_between_points_of_a_v2_vault(bare_qemu, tmp_path: Path, new_size: int) -> None:
    make_v2_vault(vault_dir())
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    r1 = cutpoint("backup", "v", "--json", check=True)
    p1 = json.loads(r1.out)["point"]
    at_p1 = snapshot(images)
    change(vm, 0x31)
    _edit(chunk_size=new_size)
    r2 = cutpoint("backup", "v", "--json")
    assert "Traceback" not in r2.err, r2.err
    assert r2.code == 0, r2.err
    res = json.loads(r2.out)
    assert res["mode"] == "full" and "chunk" in res["full_reason"] and str(new_size) in res["full_reason"], res
    at_p2 = snapshot(images)
    assert restored(p1, tmp_path / "c1") == at_p1
    assert restored(res["point"], tmp_path / "c2") == at_p2
    r = cutpoint("verify", "--read-data")
    assert r.code == 0, r.err


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("field,value", [("chunk_size", 1 * MiB), ("compression", "none"),
                                         ("id", "0" * 32)])
def test_edited_config_of_a_v3_vault_is_refused_at_open(monkeypatch, tmp_path: Path, encrypted: bool, field: str,
                                                        value: object) -> None:
    if encrypted:
        encrypted_vault(monkeypatch)
    add_vm("v", tmp_path / "nowhere.qmp")
    _edit(**{field: value})
    before = tree(vault_dir())
    one_line_error(cutpoint("points"), 6, "config.json")
    one_line_error(cutpoint("backup", "v"), 6, "config.json")
    assert tree(vault_dir()) == before


@pytest.mark.parametrize("value", [3000, 0, -1, 1 << 40, "4M", 2048])
def test_out_of_range_chunk_size_is_refused_by_name(value: object) -> None:
    make_v2_vault(vault_dir())
    _edit(chunk_size=value)
    r = cutpoint("points")
    assert "Traceback" not in r.err
    one_line_error(r, 5, "chunk_size")


def test_unknown_codec_is_refused_by_name() -> None:
    make_v2_vault(vault_dir())
    _edit(compression="lz4")
    one_line_error(cutpoint("points"), 5, "compression")
