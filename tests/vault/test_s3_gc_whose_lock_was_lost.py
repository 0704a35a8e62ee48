"""gc on S3 holds an exclusive lock object. If that lock is lost while gc runs (its refreshes failed until another
host removed it as stale and took the vault), gc must delete nothing more: it checks its lock before each step
that deletes (``Vault.check_lock``)."""

from __future__ import annotations

import os

import pytest

from cutpoint.catalog.db import VmRecord
from cutpoint.errors import LockedError
from cutpoint.vault import location, packgc
from cutpoint.vault.gc import gc
from cutpoint.vault.vault import Vault
from tests.helpers import commit_synthetic_point, cutpoint


def test_gc_whose_lock_was_removed_as_stale_deletes_nothing(s3_bucket: str, s3_env, monkeypatch) -> None:
    url = f"s3://{s3_bucket}/lost"
    cutpoint("vault", "init", url, "--no-encrypt", "--soft-delete-days", "0", check=True)
    vault = Vault.open(location.resolve(url))
    try:
        vault.catalog.add_vm(VmRecord("w", "qmp", "/nonexistent", "2026-01-01T00:00:00Z", {}))
        for n in (1, 2):
            commit_synthetic_point(vault, f"2026010{n}T000000Z-000{n}", "w", f"2026-01-0{n}T00:00:00Z",
                                   {"d": [os.urandom(vault.chunk_size) for _ in range(4)]})
    finally:
        vault.close()
    cutpoint("prune", "w", "--keep-last", "1", "--vault", url, check=True)    # the first point's data is dead
    client = s3_env.client()

    def listing(prefix: str) -> set[str]:
        return {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix=prefix).get("Contents", [])}

    packs = listing("lost/data/")
    referenced = packgc.referenced

    def another_host_takes_the_vault(*args, **kwargs):  # type: ignore[no-untyped-def]
        for key in listing("lost/locks/"):              # gc's lock, removed as stale by another host
            client.delete_object(Bucket=s3_bucket, Key=key)
        return referenced(*args, **kwargs)

    vault = Vault.open(location.resolve(url))
    try:
        with monkeypatch.context() as m:
            m.setattr(packgc, "referenced", another_host_takes_the_vault)
            with pytest.raises(LockedError, match="lost the lock"):
                gc(vault, grace=0)
    finally:
        vault.close()
    assert listing("lost/data/") == packs
    res = gc(v := Vault.open(location.resolve(url)), grace=0)
    v.close()
    assert res.packs_removed + res.packs_repacked >= 1 and listing("lost/data/") != packs, res
