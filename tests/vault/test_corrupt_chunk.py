"""A flipped bit in a stored chunk (its file in v3, its blob in a pack in v4), in a plain and in an encrypted vault: verify --read-data names the chunk and every
point and disk it affects and records those points as failed; restore of an affected point fails with one line and
writes no image; the next backup is full, stores the chunk afresh, and so heals the earlier points too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cutpoint
from tests.vault.util import (MiB, assert_sound, backup, change, chunk_of, flip_chunk, one_line_error, open_vault,
                              snapshot, two_disk_vm, vault_of_format)


@pytest.mark.parametrize("fmt", [3, 4], ids=["v3", "v4"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_corrupt_chunk(bare_qemu, tmp_path: Path, monkeypatch, encrypted: bool, fmt: int) -> None:
    vault_of_format(fmt, monkeypatch, encrypt=encrypted)
    v = open_vault()
    cs = v.chunk_size
    assert v.config["version"] == fmt
    v.close()
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    change(vm, 0x21)
    p2 = backup()["point"]
    at_p2 = snapshot(images)
    cid = chunk_of(p1, "da", 0)
    assert chunk_of(p2, "da", 0) == cid                  # unchanged since p1: shared by both points

    flip_chunk(cid)

    r = cutpoint("verify", "--read-data", "--json")
    one_line_error(r, 6, "2 of 2 points failed", p1, p2)
    rep = json.loads(r.out)
    assert [c["id"] for c in rep["damaged_chunks"]] == [cid]
    damaged = rep["damaged_chunks"][0]
    assert "damaged" in damaged["problem"] and damaged["moved_aside"]
    # da holds the same bytes (0x5a) in every chunk of its first 8 MiB in p1 (deduplicated to one chunk);
    # p2 rewrote 4-6 MiB (v3: chunks [0, 1] and [0]; v4: 128 chunks, and those 64 to 95 changed)
    in_p1 = list(range(8 * MiB // cs))
    in_p2 = [i for i in in_p1 if not 4 * MiB <= i * cs < 6 * MiB]
    assert {a["point"]: (a["disk"], a["chunks"]) for a in damaged["affects"]} == {p1: ("da", in_p1),
                                                                                 p2: ("da", in_p2)}
    assert {p["point"]: p["state"] for p in rep["points"]} == {p1: "failed", p2: "failed"}
    v = open_vault()
    assert v.catalog.verified(p1).state == "failed" and v.catalog.verified(p1).level == "data"
    v.close()

    out = tmp_path / "r"
    one_line_error(cutpoint("restore", "v", p1, "--to", str(out)), 6, "cannot restore disk da", cid)
    assert list(out.iterdir()) == []                     # no image, not even a partial one

    res = backup()
    assert res["mode"] == "full" and "previous point failed verification" in res["full_reason"]
    assert {d["name"]: d["stored_bytes"] > 0 for d in res["disks"]}["da"]   # the damaged content stored afresh
    assert_sound({p1: at_p1, p2: at_p2, res["point"]: at_p2}, tmp_path)
