"""A policy's ``copy``: the service copies each VM's points into an offsite vault (made with 'vault init
--copy-of') right after every successful backup, or at its own schedule's slots; the copy holds real blobs."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cutpoint.backup.result import BackupResult
from cutpoint.backup.run import BackupOptions, iso, new_point_id
from cutpoint.policy.model import PolicyError
from cutpoint.vault.vault import Vault
from tests.helpers import commit_synthetic_point
from tests.service.fakes import FakeBackup, harness, policy

UTC = timezone.utc
MIN = timedelta(minutes=1)


class DataBackup(FakeBackup):
    """A fake backup whose points hold real chunks (random, so each point adds blobs the copy must carry)."""

    def __call__(self, vault: Vault, vm: str, opts: BackupOptions) -> BackupResult:
        now = self.clock.now()
        self.calls.append(now)
        point = new_point_id(now)
        commit_synthetic_point(vault, point, vm, iso(now), {"d": [os.urandom(vault.chunk_size) for _ in range(3)]})
        return BackupResult(point=point, vm=vm, created=iso(now), consistency="crash", requested="crash",
                            fallback_reason=None, pause_ms=0.0, frozen_ms=None, mode="full",
                            full_reason="first backup", parent=None, duration_s=0.0)


def _offsite(tmp_path: Path, name: str) -> Path:
    src = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    try:
        Vault.create(tmp_path / name, copy_of=src)
    finally:
        src.close()
    return tmp_path / name


def _points(root: Path) -> list[str]:
    v = Vault.open(root)
    try:
        return [p.id for p in v.catalog.points("v")]
    finally:
        v.close()


def test_a_policy_copies_every_backup_offsite_right_after_it(tmp_path: Path) -> None:
    dst = _offsite(tmp_path, "offsite")
    h = harness(datetime(2024, 6, 4, 12, tzinfo=UTC), backup=DataBackup)
    h.add_vm("v", policy({"frequency": "daily", "time": "03:00"}, copy={"to": str(dst), "after_backup": True}))
    h.run_until(datetime(2024, 6, 6, 3, 5, tzinfo=UTC), MIN)
    jobs = h.svc.jobs.list(kind="copy", limit=10)
    assert [(j.state, j.trigger) for j in jobs] == [("succeeded", "service")] * 2, [j.error for j in jobs]
    assert [j.detail["blobs"] for j in jobs] == [4, 4]          # 3 chunks and a leaf each: only the new ones
    assert _points(dst) == [p.id for p in h.vault.catalog.points("v")] and len(_points(dst)) == 2


def test_a_daily_copy_runs_at_its_slot_and_copies_what_the_target_lacks(tmp_path: Path) -> None:
    dst = _offsite(tmp_path, "offsite")
    h = harness(datetime(2024, 6, 4, 12, tzinfo=UTC), backup=DataBackup)
    h.add_vm("v", policy({"frequency": "hourly", "every": 6}, copy={"to": str(dst), "frequency": "daily",
                                                                  "time": "04:30", "limit_rate": "64M"}))
    h.run_until(datetime(2024, 6, 5, 4, 0, tzinfo=UTC), MIN)
    assert h.svc.jobs.list(kind="copy", limit=10) == [] and _points(dst) == []
    h.run_until(datetime(2024, 6, 5, 4, 35, tzinfo=UTC), MIN)
    jobs = h.svc.jobs.list(kind="copy", limit=10)
    assert [(j.state, j.trigger, j.slot) for j in jobs] == [("succeeded", "schedule", "2024-06-05T04:30:00.000Z")]
    made = [p.id for p in h.vault.catalog.points("v")]
    assert len(made) == 2 and _points(dst) == made and jobs[0].detail["copied"] == made


def test_a_policy_copies_to_another_s3_service_named_in_its_address(tmp_path: Path, s3_env, s3_offsite) -> None:
    """``copy.to`` on a second S3 service, with its own endpoint and AWS profile in the address, while the
    service's environment points at the first one."""
    from cutpoint.vault import location

    to = f"s3://offsite/web?endpoint={s3_offsite.endpoint}&profile=offsite"
    src = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    try:
        Vault.create(location.resolve(to), copy_of=src)
    finally:
        src.close()
    h = harness(datetime(2024, 6, 4, 12, tzinfo=UTC), backup=DataBackup)
    h.add_vm("v", policy({"frequency": "daily", "time": "03:00"}, copy={"to": to, "after_backup": True}))
    h.run_until(datetime(2024, 6, 5, 3, 5, tzinfo=UTC), MIN)
    jobs = h.svc.jobs.list(kind="copy", limit=10)
    assert [(j.state, j.detail["to"]) for j in jobs] == [("succeeded", to)], [j.error for j in jobs]
    assert _points(location.resolve(to)) == [p.id for p in h.vault.catalog.points("v")]
    keys = [o["Key"] for o in s3_offsite.client().list_objects_v2(Bucket="offsite")["Contents"]]
    assert any(k.startswith("web/data/") for k in keys), keys


def test_copy_policy_is_validated_naming_the_field() -> None:
    daily = {"frequency": "daily", "time": "03:00"}
    with pytest.raises(PolicyError, match=r"copy\.to"):
        policy(daily, copy={"to": "relative/dir", "after_backup": True})
    with pytest.raises(PolicyError, match=r"copy\.to"):
        policy(daily, copy={"to": "s3://BAD_BUCKET/x", "after_backup": True})
    with pytest.raises(PolicyError, match=r"copy\.to.*endpoint=URL and profile=NAME"):
        policy(daily, copy={"to": "s3://offsite/x?region=eu", "after_backup": True})
    with pytest.raises(PolicyError, match=r"copy\.limit_rate"):
        policy(daily, copy={"to": "/mnt/offsite", "after_backup": True, "limit_rate": "fast"})
    with pytest.raises(PolicyError, match=r"copy: give either"):
        policy(daily, copy={"to": "/mnt/offsite", "after_backup": True, "frequency": "daily", "time": "04:00"})
    with pytest.raises(PolicyError, match=r"copy: needs"):
        policy(daily, copy={"to": "/mnt/offsite"})
    p = policy(daily, copy={"to": "s3://offsite/web", "frequency": "daily", "time": "4:00", "limit_rate": "20M"})
    assert p.to_dict()["copy"] == {"frequency": "daily", "time": "04:00", "to": "s3://offsite/web",
                                   "limit_rate": 20 << 20}
    assert policy(daily, copy={"to": "/mnt/o", "after_backup": True}).to_dict()["copy"] == \
        {"after_backup": True, "to": "/mnt/o"}


def test_policy_create_takes_the_copy_flags() -> None:
    from tests.helpers import cutpoint
    from tests.vault.util import one_line_error

    cutpoint("policy", "create", "nightly", "--daily", "02:00", "--copy-to", "s3://offsite/web", "--copy-daily",
             "04:00", "--copy-limit-rate", "20M", check=True)
    shown = json.loads(cutpoint("policy", "show", "nightly", "--json", check=True).out)
    assert shown["copy"] == {"frequency": "daily", "time": "04:00", "to": "s3://offsite/web", "limit_rate": 20 << 20}
    cutpoint("policy", "create", "each", "--daily", "02:00", "--copy-to", "/mnt/offsite", check=True)
    assert json.loads(cutpoint("policy", "show", "each", "--json", check=True).out)["copy"] == \
        {"after_backup": True, "to": "/mnt/offsite"}
    one_line_error(cutpoint("policy", "create", "bad", "--daily", "02:00", "--copy-daily", "04:00"), 2, "--copy-to")
    one_line_error(cutpoint("policy", "create", "bad", "--daily", "02:00", "--copy-to", "offsite"), 2, "copy.to")
