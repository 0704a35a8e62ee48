"""S3 backend against a real SeaweedFS: Object Lock refusing deletes (through cutpoint and around it), retention
extension, bad credentials, an unreachable endpoint, and planted keys in a listing."""

from __future__ import annotations

import datetime as dt
import socket
import time

import botocore.exceptions
import pytest

from cutpoint.errors import RetentionError, StorageAuthError, VaultError
from cutpoint.vault.s3backend import Retention, S3Backend

from .s3server import S3Server


def _until(b: S3Backend, client, name: str) -> dt.datetime:  # type: ignore[no-untyped-def]
    r = client.get_object_retention(Bucket=b.bucket, Key=b.prefix + name)["Retention"]
    return r["RetainUntilDate"]


def _put_headers(b: S3Backend) -> list[dict[str, str]]:
    """The headers of every PutObject the backend sends from now on, as they go out."""
    seen: list[dict[str, str]] = []
    b.client.meta.events.register("before-send.s3.PutObject",
                                  lambda request, **_: seen.append({k.lower(): str(v) for k, v in
                                                                    request.headers.items()}))
    return seen


def _checksummed(headers: dict[str, str]) -> bool:
    return any(k.startswith("x-amz-checksum-") for k in headers) or "crc" in headers.get("x-amz-trailer", "").lower()


def test_puts_carry_no_checksum_pass_except_under_object_lock(s3_env: S3Server, s3_bucket: str,
                                                              s3_lock_bucket: str) -> None:
    """A pack's blobs carry their own checks and the payload is signed: botocore's CRC32 of every body (its default
    since 1.36) is a second pass over each pack. An Object Lock write keeps one: S3 requires it there."""
    plain = S3Backend(s3_bucket, "v")
    sent = _put_headers(plain)
    plain.put("packs/aa/1", b"x" * 4096)
    assert plain.create("locks/one", b"mine")
    assert len(sent) == 2 and not any(_checksummed(h) for h in sent), sent
    locked = S3Backend(s3_lock_bucket, "v", retention=Retention("GOVERNANCE", 1))
    sent = _put_headers(locked)
    locked.put("packs/aa/1", b"keep")
    locked.put("locks/two", b"mine")           # lock objects carry no retention, so no checksum either
    assert [_checksummed(h) for h in sent] == [True, False], sent
    assert locked.get("packs/aa/1") == b"keep"


@pytest.mark.parametrize("mode", ["COMPLIANCE", "GOVERNANCE"])
def test_retained_object_delete_refused_by_cutpoint_and_store(s3_env: S3Server, s3_lock_bucket: str,
                                                              mode: str) -> None:
    b = S3Backend(s3_lock_bucket, "v", retention=Retention(mode, 1))
    b.put("packs/aa/1", b"keep me")
    client = s3_env.client()
    assert _until(b, client, "packs/aa/1") > dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=23)
    with pytest.raises(RetentionError):
        b.delete("packs/aa/1")
    assert b.get("packs/aa/1") == b"keep me"
    vid = client.head_object(Bucket=s3_lock_bucket, Key="v/packs/aa/1")["VersionId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:       # around cutpoint: the store itself refuses
        client.delete_object(Bucket=s3_lock_bucket, Key="v/packs/aa/1", VersionId=vid)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert b.get("packs/aa/1") == b"keep me"


def test_retained_sees_every_version_and_the_retain_until_date(s3_env: S3Server, s3_lock_bucket: str) -> None:
    """A newer version without retention (a bucket writer's) does not hide an older one under it: the delete is a
    retention refusal, not an access error; a legal hold counts; and once the date has passed (the store still
    reports it) the object is no longer retained and goes."""
    b = S3Backend(s3_lock_bucket, "v", retention=Retention("GOVERNANCE", 1))
    client = s3_env.client()
    b.put("deleted/w/p.deleted", b"record")
    client.put_object(Bucket=s3_lock_bucket, Key="v/deleted/w/p.deleted", Body=b"forged, no retention")
    assert b.retained("deleted/w/p.deleted")
    with pytest.raises(RetentionError):
        b.delete("deleted/w/p.deleted")
    for ver in client.list_object_versions(Bucket=s3_lock_bucket, Prefix="v/deleted/w/p.deleted")["Versions"]:
        if ver["VersionId"] != "null":
            client.put_object_retention(Bucket=s3_lock_bucket, Key="v/deleted/w/p.deleted",
                                        VersionId=ver["VersionId"], BypassGovernanceRetention=True, Retention={
                                            "Mode": "GOVERNANCE", "RetainUntilDate":
                                            dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)})
    time.sleep(3)
    assert not b.retained("deleted/w/p.deleted")
    b.delete("deleted/w/p.deleted")
    assert not b.exists("deleted/w/p.deleted")

    plain = S3Backend(s3_lock_bucket, "h")
    plain.put("x", b"held")
    client.put_object_legal_hold(Bucket=s3_lock_bucket, Key="h/x", LegalHold={"Status": "ON"})
    assert plain.retained("x")
    with pytest.raises(RetentionError):
        plain.delete("x")
    client.put_object_legal_hold(Bucket=s3_lock_bucket, Key="h/x", LegalHold={"Status": "OFF"})
    assert not plain.retained("x")


def test_create_carries_retention(s3_env: S3Server, s3_lock_bucket: str) -> None:
    b = S3Backend(s3_lock_bucket, "v", retention=Retention("COMPLIANCE", 2))
    assert b.create("index/1", b"i") is True
    assert b.create("index/1", b"j") is False
    assert _until(b, s3_env.client(), "index/1") > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)


def test_extend_retention(s3_env: S3Server, s3_lock_bucket: str) -> None:
    b = S3Backend(s3_lock_bucket, "v", retention=Retention("GOVERNANCE", 1))
    b.put("packs/bb/2", b"x")
    client = s3_env.client()
    before = _until(b, client, "packs/bb/2")
    b.extend_retention("packs/bb/2", 30)
    after = _until(b, client, "packs/bb/2")
    assert after - before > dt.timedelta(days=28)


def test_delete_after_expiry_removes_every_version(s3_env: S3Server, s3_lock_bucket: str) -> None:
    b = S3Backend(s3_lock_bucket, "v")
    client = s3_env.client()
    b.put("packs/cc/3", b"a")
    client.put_object_retention(Bucket=s3_lock_bucket, Key="v/packs/cc/3", Retention={
        "Mode": "COMPLIANCE", "RetainUntilDate": dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)})
    with pytest.raises(RetentionError):
        b.delete("packs/cc/3")
    time.sleep(2.5)
    b.delete("packs/cc/3")
    assert client.list_object_versions(Bucket=s3_lock_bucket, Prefix="v/packs/cc/3").get("Versions", []) == []


def test_bad_credentials_are_an_auth_error(s3_env: S3Server, s3_bucket: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    b = S3Backend(s3_bucket, "v")
    with pytest.raises(StorageAuthError, match="AWS_ACCESS_KEY_ID"):
        b.put("packs/aa/1", b"x")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unknownkey")
    with pytest.raises(StorageAuthError):
        list(S3Backend(s3_bucket, "v").list())


def test_unreachable_endpoint_fails_fast(s3_env: S3Server, s3_bucket: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]           # closed again: nothing listens there
    b = S3Backend(s3_bucket, "v", endpoint=f"http://127.0.0.1:{port}", timeout=2)
    t0 = time.monotonic()
    with pytest.raises(VaultError, match="CUTPOINT_S3_ENDPOINT"):
        b.get("packs/aa/1")
    assert time.monotonic() - t0 < 30


def test_silent_endpoint_times_out(s3_env: S3Server, s3_bucket: str) -> None:
    """A server that accepts and never answers: the read timeout ends it, not a hang."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        b = S3Backend(s3_bucket, "v", endpoint=f"http://127.0.0.1:{srv.getsockname()[1]}", timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(VaultError):
            b.get("packs/aa/1")
        assert time.monotonic() - t0 < 20


def test_listing_skips_planted_keys(s3_env: S3Server, s3_bucket: str) -> None:
    client = s3_env.client()
    planted = 0
    for key in ("v/packs/aa/ok", "v/packs/../../etc", "v/packs/-dash", "v/packs/a b", "v/.hidden",
                "v/packs/x\nnl"):
        try:
            client.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
            planted += 1
        except botocore.exceptions.ClientError:
            pass                            # SeaweedFS refuses some keys itself (e.g. '..' parts)
    assert planted >= 4
    b = S3Backend(s3_bucket, "v")
    assert [o.name for o in b.list()] == ["packs/aa/ok"]


def test_retained_never_guesses_no_when_the_store_cannot_answer(s3_env: S3Server, s3_lock_bucket: str,
                                                               s3_bucket: str) -> None:
    """A refusal to say (here: no permission for the legal hold, injected) is an error, not "not retained": gc
    would free what the store keeps. A retain-until date without a zone is UTC. A bucket without Object Lock
    retains nothing, and is not asked per version."""
    b = S3Backend(s3_lock_bucket, "q")
    b.put("deleted/w/p.deleted", b"record")

    def denied(**_: object) -> None:
        raise botocore.exceptions.ClientError({"Error": {"Code": "AccessDenied"},
                                               "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObjectLegalHold")
    b.client.get_object_legal_hold = denied
    with pytest.raises(StorageAuthError):
        b.retained("deleted/w/p.deleted")

    naive = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(hours=1)
    b.client.get_object_retention = lambda **_: {"Retention": {"Mode": "GOVERNANCE", "RetainUntilDate": naive}}
    assert b.retained("deleted/w/p.deleted")

    plain = S3Backend(s3_bucket, "q")
    plain.put("x", b"1")
    plain.client.get_object_retention = denied
    assert not plain.retained("x")
