"""Faults of 'cutpoint copy' a review found, each reproduced before its fix: a point id the target already lists
for another VM, a later VM of one copy relying on a pack an earlier VM's copy wrote without registering it, and a
row taken from the source's unauthenticated catalog."""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cutpoint.errors import ImmutableError, UsageError
from cutpoint.vault import copy as copymod
from cutpoint.vault.copy import copy
from cutpoint.vault.delete import delete_point
from cutpoint.vault.gc import gc
from cutpoint.vault.protection import Protection
from cutpoint.vault.vault import Vault
from tests.helpers import commit_synthetic_point

KiB = 1024


def _pair(tmp_path: Path, **target) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    src_p, dst_p = tmp_path / "src", tmp_path / "dst"
    Vault.create(src_p, chunk_size=64 * KiB)
    src = Vault.open(src_p)
    Vault.create(dst_p, copy_of=src, **target)
    src.close()
    return src_p, dst_p


def _point(root: Path, vm: str, pid: str, chunks: list[bytes], created: str = "2026-01-01T00:00:00.000Z") -> None:
    v = Vault.open(root)
    try:
        with v.vm_lock(vm):
            commit_synthetic_point(v, pid, vm, created, {"d": chunks})
    finally:
        v.close()


def test_a_point_id_the_target_lists_for_another_vm_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """Written anyway, the manifest became visible and the catalog row failed (an id is listed once): on S3 every
    later open of the target, on every host, failed in its catalog sync."""
    src_p, dst_p = _pair(tmp_path)
    pid = "20260101T030000Z-beef"
    _point(src_p, "b", pid, [os.urandom(64 * KiB) for _ in range(4)])
    _point(dst_p, "a", pid, [os.urandom(64 * KiB) for _ in range(4)])
    src, dst = Vault.open(src_p), Vault.open(dst_p)
    try:
        with pytest.raises(UsageError, match="holds a point of that id for VM a"):
            copy(src, dst, "b")
    finally:
        src.close()
        dst.close()
    assert sorted(p.relative_to(dst_p).as_posix() for p in (dst_p / "points").rglob("*.manifest")) == \
        [f"points/a/{pid}.manifest"]
    Vault.open(dst_p).close()


def test_a_later_vm_of_one_copy_registers_the_pack_an_earlier_vm_wrote(tmp_path: Path, monkeypatch) -> None:
    """A copy of every VM keeps one pack store: VM b's copy found a blob in the pack VM a's copy had just written
    and relied on it unregistered (a's registration ended with a's lock). A delete of a's point and a target gc
    before b's manifest then deleted that pack, and b's point was visible without the blob."""
    src_p, dst_p = _pair(tmp_path)
    x = os.urandom(64 * KiB)
    _point(src_p, "a", "20260101T000000Z-000a", [x] + [os.urandom(64 * KiB) for _ in range(15)])
    _point(src_p, "b", "20260101T000001Z-000b", [x] + [os.urandom(64 * KiB) for _ in range(3)],
           "2026-01-01T00:00:01.000Z")
    hit, commits = copymod.faults.hit, []

    def a_gc_before_bs_manifest(stage: str) -> None:
        if stage == "copy-manifest":
            commits.append(stage)
            if len(commits) == 2:                    # b's: a's point is deleted on the target and gc runs
                other = Vault.open(dst_p)
                try:
                    delete_point(other, "20260101T000000Z-000a")
                    gc(other, grace=0)
                finally:
                    other.close()
        hit(stage)

    monkeypatch.setattr(copymod.faults, "hit", a_gc_before_bs_manifest)
    src, dst = Vault.open(src_p), Vault.open(dst_p)
    try:
        assert copy(src, dst).copied == ["20260101T000000Z-000a", "20260101T000001Z-000b"]
    finally:
        src.close()
        dst.close()
    fresh = Vault.open(dst_p)
    try:
        m = fresh.manifest(fresh.catalog.point("b", "20260101T000001Z-000b"))
        assert [fresh.chunks.get(c) for c in m.disks[0].chunks][0] == x
    finally:
        fresh.close()


def test_the_copied_row_comes_from_the_manifest_not_the_sources_catalog(tmp_path: Path) -> None:
    """The source's catalog is an unauthenticated file: a 'created' forged there aged the copied point past the
    target's immutability, and delete removed it at once."""
    src_p, dst_p = _pair(tmp_path, protection=Protection(immutable_days=30))
    pid = "20260101T000000Z-0001"
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    _point(src_p, "web", pid, [os.urandom(64 * KiB) for _ in range(4)], now)
    db = sqlite3.connect(src_p / "catalog.sqlite")
    db.execute("UPDATE points SET created=?, consistency=? WHERE id=?", ("2000-01-01T00:00:00.000Z", "app", pid))
    db.commit()
    db.close()
    src, dst = Vault.open(src_p), Vault.open(dst_p)
    try:
        copy(src, dst, "web")
        row = dst.catalog.point("web", pid)
        assert (row.created, row.consistency) == (now, "crash"), row
        with pytest.raises(ImmutableError, match="immutable until"):
            delete_point(dst, pid)
    finally:
        src.close()
        dst.close()


def _flip(root: Path, vault: Vault, data: bytes) -> None:
    """One bit of the stored copy of ``data``'s chunk flipped in its pack (bit rot, or a hostile store)."""
    from cutpoint.vault.packfile import pack_name
    loc = vault.chunks.index().where[vault.chunks.bid(vault.chunks.chunk_id(data))]
    path = root / pack_name(loc.pid)
    raw = bytearray(path.read_bytes())
    raw[loc.offset + loc.length // 2] ^= 1
    path.write_bytes(bytes(raw))


def test_a_damaged_chunk_in_the_source_is_not_carried_into_the_target(tmp_path: Path) -> None:
    """Blobs travelled as stored, unchecked: a damaged one reached the target, whose index then listed it, and every
    later point reused it there, even after the source had healed."""
    from cutpoint.errors import IntegrityError
    src_p, dst_p = _pair(tmp_path)
    datas = [os.urandom(64 * KiB) for _ in range(8)]
    _point(src_p, "web", "20260101T000000Z-0001", datas)
    src, dst = Vault.open(src_p), Vault.open(dst_p)
    try:
        _flip(src_p, src, datas[3])
        with pytest.raises(IntegrityError, match="verify --read-data"):
            copy(src, dst, "web")
        assert dst.catalog.points() == []
        assert dst.chunks.reload().where.get(src.chunks.bid(src.chunks.chunk_id(datas[3]))) is None
    finally:
        src.close()
        dst.close()


def test_a_chunk_damaged_in_the_target_is_marked_by_verify_and_stored_again_by_the_rerun(tmp_path: Path) -> None:
    """--verify failed on a damaged copy in the target, and every rerun failed the same way, reusing it."""
    from cutpoint.errors import IntegrityError
    src_p, dst_p = _pair(tmp_path)
    datas = [os.urandom(64 * KiB) for _ in range(8)]
    _point(src_p, "web", "20260101T000000Z-0001", datas)
    src, dst = Vault.open(src_p), Vault.open(dst_p)
    try:
        copy(src, dst, "web")
        _flip(dst_p, dst, datas[3])
    finally:
        src.close()
        dst.close()
    _point(src_p, "web", "20260102T000000Z-0002", datas, "2026-01-02T00:00:00.000Z")
    for attempt in range(2):
        src, dst = Vault.open(src_p), Vault.open(dst_p)
        try:
            if attempt == 0:
                with pytest.raises(IntegrityError, match="marked, and a rerun"):
                    copy(src, dst, "web", verify_data=True)
                assert [p.id for p in dst.catalog.points()] == ["20260101T000000Z-0001"]
            else:
                assert copy(src, dst, "web", verify_data=True).copied == ["20260102T000000Z-0002"]
                m = dst.manifest(dst.catalog.point("web", "20260102T000000Z-0002"))
                assert [dst.chunks.get(c) for c in m.disks[0].chunks] == datas
        finally:
            src.close()
            dst.close()
