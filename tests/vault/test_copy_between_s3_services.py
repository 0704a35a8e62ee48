"""An offsite copy from one S3 service to another, each reached with its own endpoint and credentials: the target's
address carries them (``s3://BUCKET/PREFIX?endpoint=URL&profile=NAME``), while the source uses the command's
endpoint and the AWS_* variables. Two real SeaweedFS servers with different identities."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest

from tests.helpers import cutpoint
from tests.vault.s3server import S3Server
from tests.vault.test_copy import _backup, _copy, _now, _restored, _vm
from tests.vault.util import one_line_error


def test_copy_between_two_s3_services_each_with_its_own_endpoint_and_credentials(
        bare_qemu, tmp_path: Path, s3_bucket: str, s3_env: S3Server, s3_offsite: S3Server) -> None:
    offsite = s3_offsite
    src = f"s3://{s3_bucket}/src"                           # endpoint and credentials from the environment
    dst = f"s3://offsite/web?endpoint={urllib.parse.quote(offsite.endpoint, safe='')}&profile=offsite"
    cutpoint("vault", "init", src, "--no-encrypt", check=True)
    vm, images = _vm(bare_qemu, tmp_path, src)
    point = _backup(src)["point"]
    at = _now(images)
    cutpoint("vault", "init", dst, "--copy-of", src, "--no-encrypt", check=True)

    res = _copy(src, dst)
    assert res["copied"] == [point] and res["blobs"] > 0, res
    keys = {o["Key"] for o in offsite.client().list_objects_v2(Bucket="offsite").get("Contents", [])}
    assert f"web/points/web/{point}.manifest" in keys and any(k.startswith("web/data/") for k in keys), keys
    names = [b["Name"] for b in s3_env.client().list_buckets()["Buckets"]]
    assert "offsite" not in names                           # nothing went to the source's service

    assert _restored(tmp_path, dst, point) == at             # the target restores through its own address
    r = cutpoint("verify", "--read-data", "--json", "--vault", dst)
    assert r.code == 0 and json.loads(r.out)["ok"], r.err

    # the profile is what reaches the target: without it, the source's credentials are refused there
    plain = f"s3://offsite/web?endpoint={offsite.endpoint}"
    one_line_error(cutpoint("points", "--vault", plain), 11, "refused access")
    # hints name a vault by an address that reaches it again, endpoint and profile included
    nothing = f"s3://offsite/none?endpoint={offsite.endpoint}&profile=offsite"
    one_line_error(cutpoint("points", "--vault", nothing), 3, f"cutpoint vault init '{nothing}'")
    other = f"s3://offsite/other?endpoint={offsite.endpoint}&profile=offsite"
    cutpoint("vault", "init", other, "--no-encrypt", check=True)
    endpoint = s3_env.endpoint
    one_line_error(cutpoint("copy", "web", "--from", src, "--to", other), 2,
                   f"--copy-of 's3://{s3_bucket}/src?endpoint={endpoint}'")


def test_a_vault_address_naming_an_unknown_profile_or_parameter_is_refused(
        tmp_path: Path, s3_bucket: str, s3_env: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    one_line_error(cutpoint("vault", "init", f"s3://{s3_bucket}/v?profile=nosuch", "--no-encrypt"), 11,
                   "AWS profile 'nosuch'", "~/.aws/credentials")
    one_line_error(cutpoint("vault", "init", f"s3://{s3_bucket}/v?region=eu", "--no-encrypt"), 2,
                   "endpoint=URL and profile=NAME")
    one_line_error(cutpoint("points", "--vault", f"s3://{s3_bucket}/v?endpoint=ftp://x"), 2, "not an http(s) URL")
    one_line_error(cutpoint("points", "--vault", f"s3://{s3_bucket}/v?endpoint=http://me:secret@127.0.0.1:1"), 2,
                   "without user:password@")
    one_line_error(cutpoint("points", "--vault", f"s3://{s3_bucket}/v?endpoint=http://h%1B:1"), 2, "printable")
    assert s3_env.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0     # nothing was written
