"""The key and config of an Object Lock vault on S3: every point needs both, so gc keeps them retained like the
packs, and a host does not delete its own copy of the key when the bucket's disappears."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

from cutpoint.vault import location
from tests.helpers import cutpoint


def _retained_until(client, bucket: str, key: str) -> datetime:  # type: ignore[no-untyped-def]
    until = client.get_object_retention(Bucket=bucket, Key=key)["Retention"]["RetainUntilDate"]
    return until if isinstance(until, datetime) else datetime.fromisoformat(str(until))


def test_gc_extends_the_retention_of_key_and_config_past_their_init_retention(
        s3_lock_bucket: str, s3_env, monkeypatch) -> None:
    """Retained only from 'vault init', key.json became deletable N days later: a bucket writer deleting its
    versions then made every point unreadable, the youngest too. gc extends them as it does the packs."""
    monkeypatch.setenv("CUTPOINT_PASSPHRASE", "correct horse")
    url = f"s3://{s3_lock_bucket}/meta"
    cutpoint("vault", "init", url, "--immutable-days", "1", "--object-lock", "governance", check=True)
    client = s3_env.client()
    for name in ("key.json", "config.json"):          # the day after init: their retention has run out
        key = f"meta/{name}"
        for ver in client.list_object_versions(Bucket=s3_lock_bucket, Prefix=key)["Versions"]:
            client.put_object_retention(Bucket=s3_lock_bucket, Key=key, VersionId=ver["VersionId"],
                                        BypassGovernanceRetention=True, Retention={
                                            "Mode": "GOVERNANCE",
                                            "RetainUntilDate": datetime.now(timezone.utc) + timedelta(seconds=2)})
    time.sleep(3)
    res = json.loads(cutpoint("gc", "--grace", "0", "--json", "--vault", url, check=True).out)
    assert res["retention_extended"] >= 2, res
    for name in ("key.json", "config.json"):
        until = _retained_until(client, s3_lock_bucket, f"meta/{name}")
        assert until > datetime.now(timezone.utc) + timedelta(hours=23), (name, until)


def test_a_key_hidden_in_the_bucket_by_a_delete_marker_keeps_the_hosts_copy(s3_bucket: str, s3_env,
                                                                            monkeypatch) -> None:
    """A delete of key.json without a version id (allowed even under Object Lock) made the next command delete
    this host's copy as well, and the vault no longer opened anywhere."""
    monkeypatch.setenv("CUTPOINT_PASSPHRASE", "correct horse")
    url = f"s3://{s3_bucket}/hid"
    cutpoint("vault", "init", url, check=True)
    root = location.resolve(url)
    mine = (root / "key.json").read_bytes()
    s3_env.client().delete_object(Bucket=s3_bucket, Key="hid/key.json")
    r = cutpoint("points", "--json", "--vault", url)
    assert r.code == 0, r.err
    assert "no key.json" in r.err and "vault key import" in r.err, r.err
    assert (root / "key.json").read_bytes() == mine
    r = cutpoint("vault", "key", "import", str(root / "key.json"), "--vault", url)
    assert r.code == 0, r.err
    assert s3_env.client().get_object(Bucket=s3_bucket, Key="hid/key.json")["Body"].read() == mine
