"""Soft delete on an S3 vault with Object Lock: the objects under ``deleted/`` are written with retention like every
other, so an undelete (which removes them once the point is back) and gc (which drops stale ones and purges expired
ones) meet objects the store refuses to delete. Those stay until their retention ends; nothing fails for it."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cutpoint.catalog.db import VmRecord
from cutpoint.vault import location
from cutpoint.vault.vault import Vault
from tests.helpers import commit_synthetic_point, cutpoint


def test_undelete_and_gc_on_an_object_lock_vault(tmp_path: Path, s3_lock_bucket: str, s3_env) -> None:
    url = f"s3://{s3_lock_bucket}/sdl"
    v = ("--vault", url)
    _lock_vault(url, "--immutable-days", "1")      # and 14 days of soft delete, the default
    pid = "20230101T000000Z-0a0a"
    data = _old_points(url, 2, {pid: 2})[pid]

    r = cutpoint("delete", pid, *v)                  # ... but its manifest, written just now, is retained a day
    assert r.code == 12 and "retention" in r.err, r.err
    assert json.loads(cutpoint("points", "--deleted", "--json", *v, check=True).out) == []
    r = cutpoint("gc", "--grace", "0", "--json", *v)
    assert r.code == 0, r.err                        # the refused delete's records: retained, left for later

    client = s3_env.client()
    _a_day_passes(client, s3_lock_bucket, f"sdl/points/w/{pid}.manifest")
    cutpoint("delete", pid, *v, check=True)
    assert [d["point"] for d in json.loads(cutpoint("points", "--deleted", "--json", *v, check=True).out)] == [pid]
    r = cutpoint("undelete", pid, *v)
    assert r.code == 0, r.err                        # the deletion record and copy stay until their retention ends
    assert [p["point"] for p in json.loads(cutpoint("points", "w", "--json", *v, check=True).out)] == [pid]
    assert json.loads(cutpoint("points", "--deleted", "--json", *v, check=True).out) == []
    dry = json.loads(cutpoint("gc", "--grace", "0", "--json", "--dry-run", *v, check=True).out)
    r = cutpoint("gc", "--grace", "0", "--json", *v)
    assert r.code == 0, r.err
    res = json.loads(r.out)                          # the stale record is retained: neither run removes it
    assert (dry["removed_records"], dry["removed_manifests"]) == (res["removed_records"], res["removed_manifests"]) \
        == (0, 0), (dry, res)
    r = cutpoint("restore", "w", pid, "--to", str(tmp_path / "out"), *v)
    assert r.code == 0, r.err
    assert (tmp_path / "out" / "d.raw").read_bytes() == b"".join(data)
    r = cutpoint("verify", "--read-data", *v)
    assert r.code == 0, r.err

    # deleted again; then a writer of the bucket adds a version of the deletion record that says "20 days ago"
    _a_day_passes(client, s3_lock_bucket, f"sdl/points/w/{pid}.manifest")
    cutpoint("delete", pid, *v, check=True)
    key = f"sdl/deleted/w/{pid}.deleted"
    doc = json.loads(client.get_object(Bucket=s3_lock_bucket, Key=key)["Body"].read())
    doc["deleted"] = (datetime.now(timezone.utc) - timedelta(days=20)).isoformat(timespec="seconds")
    client.put_object(Bucket=s3_lock_bucket, Key=key, Body=json.dumps(doc).encode())
    [listed] = json.loads(cutpoint("points", "--deleted", "--json", *v, check=True).out)
    assert listed["point"] == pid and listed["deleted"] >= datetime.now(timezone.utc).strftime("%Y-%m-%d"), listed
    res = json.loads(cutpoint("gc", "--grace", "0", "--json", *v, check=True).out)
    assert res["soft_deleted"] == [pid] and res["purged"] == [], res     # not shortened: its data is kept
    cutpoint("undelete", pid, *v, check=True)
    r = cutpoint("restore", "w", pid, "--to", str(tmp_path / "again"), *v)
    assert r.code == 0, r.err
    assert (tmp_path / "again" / "d.raw").read_bytes() == b"".join(data)


def test_gc_keeps_an_expired_points_record_the_store_still_retains(tmp_path: Path, s3_lock_bucket: str,
                                                                   s3_env) -> None:
    """Immutability longer than the soft delete: when it expires, the record is still retained by the store. The
    purge keeps it (the point stays listed, expired) and fails nothing; its data is freed."""
    from cutpoint.vault import softdelete
    from cutpoint.vault.protection import current

    url = f"s3://{s3_lock_bucket}/ret"
    _lock_vault(url, "--immutable-days", "1")
    pid = "20230101T000000Z-0b0b"
    _old_points(url, 2, {pid: 1})
    _a_day_passes(s3_env.client(), s3_lock_bucket, f"ret/points/w/{pid}.manifest")
    cutpoint("delete", pid, "--vault", url, check=True)
    vault = Vault.open(location.resolve(url))
    try:
        [dp] = softdelete.scan(vault, current(vault))
        assert softdelete.purge(vault, dp, dry_run=False) == (False, 0)      # what gc does once it expired
        assert [d.id for d in softdelete.scan(vault, current(vault))] == [pid]
    finally:
        vault.close()


def _lock_vault(url: str, *protection: str) -> None:
    """An unencrypted vault on the lock bucket, with Object Lock in governance mode (a test may bypass it)."""
    cutpoint("vault", "init", url, "--no-encrypt", *protection, "--object-lock", "governance", check=True)


def _old_points(url: str, days: float, points: dict[str, int]) -> dict[str, list[bytes]]:
    """Points of VM 'w' created ``days`` ago (old enough for cutpoint to delete), each of that many random chunks;
    their manifests, written now, are retained a full immutability by the store."""
    vault = Vault.open(location.resolve(url))
    try:
        vault.catalog.add_vm(VmRecord("w", "qmp", "/nonexistent", "2023-01-01T00:00:00Z", {}))
        old = (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
        out = {}
        for pid, n in points.items():
            out[pid] = [os.urandom(vault.chunk_size) for _ in range(n)]
            commit_synthetic_point(vault, pid, "w", old, {"d": out[pid]}, {"point": pid})
        return out
    finally:
        vault.close()


def _a_day_passes(client, bucket: str, key: str) -> None:  # type: ignore[no-untyped-def]
    """Shorten the retention of every version of ``key`` to 2 s (governance, with the bypass a test may use)."""
    for ver in client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]:
        client.put_object_retention(Bucket=bucket, Key=key, VersionId=ver["VersionId"], BypassGovernanceRetention=True,
                                    Retention={"Mode": "GOVERNANCE",
                                               "RetainUntilDate": datetime.now(timezone.utc) + timedelta(seconds=2)})
    time.sleep(3)


def _delete_when_the_store_lets_it(client, bucket: str, url: str,  # type: ignore[no-untyped-def]
                                   prefix: str, pid: str) -> None:
    """Soft-delete point ``pid`` of VM 'w' once the store's retention of its manifest has ended, then end the
    retention of its deletion record and manifest copy too."""
    _a_day_passes(client, bucket, f"{prefix}/points/w/{pid}.manifest")
    cutpoint("delete", pid, "--vault", url, check=True)
    for key in (f"{prefix}/deleted/w/{pid}.deleted", f"{prefix}/deleted/w/{pid}.manifest"):
        _a_day_passes(client, bucket, key)


def _gc_a_day_and_a_half_later(url: str, monkeypatch) -> tuple:  # type: ignore[no-untyped-def]
    """A dry run and a real gc, in-process, with the host's clock (gc's only seam for expiry) 1.5 days on."""
    from cutpoint.vault import protection
    from cutpoint.vault.gc import gc as run_gc

    later = datetime.now(timezone.utc) + timedelta(days=1.5)
    with monkeypatch.context() as m:
        m.setattr(protection, "now", lambda: later)
        vault = Vault.open(location.resolve(url))
        try:
            return run_gc(vault, grace=0, dry_run=True), run_gc(vault, grace=0)
        finally:
            vault.close()


def test_an_expired_point_whose_record_the_store_retains_stays_whole(
        tmp_path: Path, s3_lock_bucket: str, s3_env, monkeypatch) -> None:
    """Immutability (2 days) longer than the soft delete (1 day): when the soft delete expires, the store still
    retains the deletion record, so the point stays listed. gc keeps it whole (``kept_retained_records``) instead of
    freeing its data under a listed record: a longer soft delete set later makes it recoverable again, and it must
    then restore byte-identical. The host's clock, gc's only seam for expiry, is moved on in-process."""
    from cutpoint.vault import protection
    from cutpoint.vault.gc import gc as run_gc

    url = f"s3://{s3_lock_bucket}/exp"
    v = ("--vault", url)
    _lock_vault(url, "--immutable-days", "2", "--soft-delete-days", "1")
    pid = "20230101T000000Z-0c0c"
    data = _old_points(url, 3, {pid: 3})[pid]
    client = s3_env.client()
    _a_day_passes(client, s3_lock_bucket, f"exp/points/w/{pid}.manifest")
    cutpoint("delete", pid, *v, check=True)

    later = datetime.now(timezone.utc) + timedelta(days=1.5)          # expired; the record retained a day more
    with monkeypatch.context() as m:
        m.setattr(protection, "now", lambda: later)
        vault = Vault.open(location.resolve(url))
        try:
            res = run_gc(vault, grace=0)
        finally:
            vault.close()
    assert res.kept_retained_records == [pid] and res.purged == [] and res.soft_deleted == [pid], res
    cutpoint("vault", "protect", "--soft-delete-days", "30", *v, check=True)
    cutpoint("undelete", pid, *v, check=True)
    r = cutpoint("restore", "w", pid, "--to", str(tmp_path / "out"), *v)
    assert r.code == 0, r.err
    assert (tmp_path / "out" / "d.raw").read_bytes() == b"".join(data)


def test_gc_removes_a_manifest_copy_left_without_its_record(tmp_path: Path, s3_lock_bucket: str, s3_env) -> None:
    """An undelete or a purge killed (or refused by the store) between the record and the copy leaves a copy in
    ``deleted/`` that nothing lists: gc removes it once the store lets it go."""
    url = f"s3://{s3_lock_bucket}/orph"
    v = ("--vault", url)
    _lock_vault(url, "--immutable-days", "1")
    pid, keep = "20230101T000000Z-0d0d", "20230101T000001Z-0e0e"
    _old_points(url, 2, {pid: 1, keep: 1})
    client = s3_env.client()
    _a_day_passes(client, s3_lock_bucket, f"orph/points/w/{pid}.manifest")
    cutpoint("delete", pid, *v, check=True)
    record, copy = f"orph/deleted/w/{pid}.deleted", f"orph/deleted/w/{pid}.manifest"
    for key in (record, copy):
        _a_day_passes(client, s3_lock_bucket, key)
    for ver in client.list_object_versions(Bucket=s3_lock_bucket, Prefix=record)["Versions"]:
        client.delete_object(Bucket=s3_lock_bucket, Key=record, VersionId=ver["VersionId"])   # a purge cut off
    res = json.loads(cutpoint("gc", "--grace", "0", "--json", *v, check=True).out)
    assert res["removed_manifests"] == 1, res
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3_lock_bucket, Prefix="orph/deleted/").get("Contents", [])}
    assert keys == set(), keys
    assert [p["point"] for p in json.loads(cutpoint("points", "w", "--json", *v, check=True).out)] == [keep]


def test_gc_purges_an_expired_point_once_the_store_lets_its_record_go(
        tmp_path: Path, s3_lock_bucket: str, s3_env, monkeypatch) -> None:
    """The store's retention of the deletion record and copy has ended (a retain-until date in the past is still
    reported by the store): gc purges the expired point and releases its chunks (their pack goes once the store's
    retention of it ends too); a dry run says so first."""

    url = f"s3://{s3_lock_bucket}/end"
    _lock_vault(url, "--immutable-days", "2", "--soft-delete-days", "1")
    pid = "20230101T000000Z-0f0f"
    _old_points(url, 3, {pid: 2})
    client = s3_env.client()
    _delete_when_the_store_lets_it(client, s3_lock_bucket, url, "end", pid)

    dry, res = _gc_a_day_and_a_half_later(url, monkeypatch)          # the soft delete has expired too
    assert dry.purged == [pid] and dry.kept_retained_records == [], dry
    assert res.purged == [pid] and res.kept_retained_records == [] and res.removed_chunks >= 2, res    # data released
    # its pack is retained by the store (written with 2 days): kept, and counted as kept, by both runs
    assert (dry.packs_removed, dry.kept_retained) == (res.packs_removed, res.kept_retained) == (0, 1), (dry, res)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3_lock_bucket, Prefix="end/deleted/").get("Contents", [])}
    assert keys == set(), keys


def test_gc_leaves_a_partly_dead_pack_the_store_retains_unrepacked(
        tmp_path: Path, s3_lock_bucket: str, s3_env, monkeypatch) -> None:
    """A pack with live and dead blobs is repacked only once the store lets it go: under retention its copy would
    sit beside it (stored twice) until its retain-until date. Dry run and real run count it as kept alike."""

    url = f"s3://{s3_lock_bucket}/rep"
    _lock_vault(url, "--immutable-days", "2", "--soft-delete-days", "1")
    gone, stays = "20230101T000000Z-1a1a", "20230101T000001Z-1b1b"
    old = (datetime.now(timezone.utc) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    vault = Vault.open(location.resolve(url))
    try:
        vault.catalog.add_vm(VmRecord("w", "qmp", "/nonexistent", "2023-01-01T00:00:00Z", {}))
        chunks = [os.urandom(vault.chunk_size) for _ in range(4)]
        commit_synthetic_point(vault, gone, "w", old, {"d": chunks}, {"point": gone})
        commit_synthetic_point(vault, stays, "w", old, {"d": chunks[:1]}, {"point": stays})   # shares one chunk
    finally:
        vault.close()
    client = s3_env.client()
    _delete_when_the_store_lets_it(client, s3_lock_bucket, url, "rep", gone)

    def packs() -> set[str]:
        return {o["Key"] for o in client.list_objects_v2(Bucket=s3_lock_bucket, Prefix="rep/data/").get("Contents", [])}
    before = packs()
    dry, res = _gc_a_day_and_a_half_later(url, monkeypatch)          # the soft delete has expired
    assert res.purged == [gone], res
    # both packs are retained: the partly dead one, and the small one with the kept point's index nodes
    assert (dry.packs_repacked, dry.kept_retained) == (res.packs_repacked, res.kept_retained) == (0, 2), (dry, res)
    assert packs() == before                       # no copy of the live chunk stored beside the retained pack
    out = tmp_path / "r"
    cutpoint("restore", "w", stays, "--to", str(out), "--vault", url, check=True)
    assert (out / "d.raw").read_bytes()[:len(chunks[0])] == chunks[0]


def test_a_point_whose_record_the_store_refuses_to_purge_keeps_its_data(
        tmp_path: Path, s3_lock_bucket: str, s3_env, monkeypatch) -> None:
    """gc asked the store whether an expired point's record was still retained (no), marked without the point, then
    purged: if the store refuses the record's delete after all (a legal hold or retention set in between), the point
    stays listed, and its data must stay too. Its packs' own retention has run out, so only gc keeps them."""
    from cutpoint.vault import protection, softdelete
    from cutpoint.vault.gc import gc as run_gc

    url = f"s3://{s3_lock_bucket}/held"
    _lock_vault(url, "--immutable-days", "2", "--soft-delete-days", "1")
    pid = "20230101T000000Z-0f0f"
    data = _old_points(url, 3, {pid: 3})[pid]
    client = s3_env.client()
    _a_day_passes(client, s3_lock_bucket, f"held/points/w/{pid}.manifest")
    cutpoint("delete", pid, "--vault", url, check=True)    # its record is retained 2 days from now
    for obj in client.list_objects_v2(Bucket=s3_lock_bucket, Prefix="held/data/").get("Contents", []):
        for ver in client.list_object_versions(Bucket=s3_lock_bucket, Prefix=obj["Key"])["Versions"]:
            client.put_object_retention(Bucket=s3_lock_bucket, Key=obj["Key"], VersionId=ver["VersionId"],
                                        BypassGovernanceRetention=True, Retention={
                                            "Mode": "GOVERNANCE",
                                            "RetainUntilDate": datetime.now(timezone.utc) + timedelta(seconds=2)})
    time.sleep(3)
    later = datetime.now(timezone.utc) + timedelta(days=1.5)          # the soft delete expired
    monkeypatch.setattr(protection, "now", lambda: later)
    monkeypatch.setattr(softdelete, "retained", lambda vault, dp: False)     # what gc was told when it asked
    vault = Vault.open(location.resolve(url))
    try:
        res = run_gc(vault, grace=0)
        assert res.kept_retained_records == [pid] and res.purged == [], res
    finally:
        vault.close()
    vault = Vault.open(location.resolve(url))
    try:
        [dp] = softdelete.scan(vault, protection.current(vault))
        assert dp.id == pid and dp.row is not None and dp.manifest is not None
        m = vault.manifest(dp.row, at=dp.manifest)
        assert [vault.chunks.get(c) for c in m.disks[0].chunks] == data
    finally:
        vault.close()
