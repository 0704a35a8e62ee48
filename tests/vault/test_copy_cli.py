"""`cutpoint copy` through its command line, as other tools call it: ``--points`` copies exactly the points named,
a copy into S3 killed mid-way leaves no point there and the rerun (on the same host: the dead copy's lock object is
stale) completes, and an S3 vault is reached with ``--s3-endpoint`` alone and through ``CUTPOINT_VAULT``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import cutpoint, guest_write
from tests.vault.test_copy import _backup, _copy, _now, _restored, _to_s3_setup, _vm


def _points(vault: str) -> list[str]:
    return [p["point"] for p in json.loads(cutpoint("points", "web", "--json", "--vault", vault, check=True).out)]


def test_copy_points_copies_exactly_the_points_named(bare_qemu, tmp_path: Path) -> None:
    src, dst = os.environ["CUTPOINT_VAULT"], str(tmp_path / "offsite")
    vm, images = _vm(bare_qemu, tmp_path, src)
    first = _backup(src)["point"]
    guest_write(vm.qmp, "data", "write -P 0x3c 1M 512k")
    second = _backup(src)["point"]
    at_second = _now(images)
    cutpoint("vault", "init", dst, "--copy-of", src, "--no-encrypt", check=True)
    res = _copy(src, dst, "--points", second[:20])           # a unique prefix names it
    assert res["copied"] == [second] and first not in res["skipped"], res
    assert _points(dst) == [second]
    assert _restored(tmp_path, dst, second) == at_second
    rest = _copy(src, dst)
    assert rest["copied"] == [first] and rest["skipped"] == [second], rest
    assert _points(dst) == [first, second]


def test_a_copy_to_s3_killed_mid_way_shows_no_point_and_the_rerun_completes(
        bare_qemu, tmp_path: Path, s3_bucket: str, s3_env) -> None:
    src, dst, point, at = _to_s3_setup(bare_qemu, tmp_path, s3_bucket, random_mib=8)
    p = subprocess.run([sys.executable, "-m", "cutpoint.cli.main", "copy", "--from", src, "--to", dst],
                       env={**os.environ, "CUTPOINT_FAULT": "pack-written@6"}, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == -9, p.stderr
    keys = {o["Key"] for o in s3_env.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])}
    assert any(k.startswith("off/data/") for k in keys)                     # packs arrived ...
    assert not any(k.startswith("off/points/") for k in keys)               # ... but no point
    assert any(k.startswith("off/locks/") for k in keys)                    # the dead copy's lock object
    assert json.loads(cutpoint("points", "--json", "--vault", dst, check=True).out) == []
    rerun = _copy(src, dst)
    assert rerun["copied"] == [point] and rerun["reused"] > 0, rerun      # the 4 packs an index object lists
    assert _restored(tmp_path, dst, point) == at
    r = cutpoint("verify", "--read-data", "--vault", dst)
    assert r.code == 0, r.err


def test_an_s3_vault_is_reached_with_s3_endpoint_alone_and_through_cutpoint_vault(
        tmp_path: Path, s3_bucket: str, s3_env, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"s3://{s3_bucket}/flag"
    endpoint = os.environ["CUTPOINT_S3_ENDPOINT"]
    monkeypatch.delenv("CUTPOINT_S3_ENDPOINT", raising=False)
    r = cutpoint("vault", "init", url, "--no-encrypt")
    assert r.code != 0 and "--s3-endpoint" in r.err, r.err                  # no endpoint: says how to give one
    cutpoint("vault", "init", url, "--no-encrypt", "--s3-endpoint", endpoint, check=True)
    info = json.loads(cutpoint("vault", "info", "--json", "--vault", url, "--s3-endpoint", endpoint,
                               check=True).out)
    monkeypatch.setenv("CUTPOINT_VAULT", url)
    monkeypatch.setenv("CUTPOINT_S3_ENDPOINT", endpoint)
    again = json.loads(cutpoint("vault", "info", "--json", check=True).out)
    assert again == info
