"""Retention never removes the newest good point: with ``--keep-last 1`` and the newest point failed verification,
prune used to keep the failed point and delete the older good one, leaving the VM with nothing restorable."""

from __future__ import annotations

import json
import os
import secrets
from datetime import datetime, timezone

from cutpoint.catalog.db import VerifyRecord, VmRecord
from tests.helpers import commit_synthetic_point, cutpoint
from tests.vault.util import open_vault, points


def _points(created: list[str]) -> list[str]:
    v = open_vault()
    v.catalog.add_vm(VmRecord("v", "qmp", "/nonexistent", "2023-01-01T00:00:00Z", {}))
    ids = []
    for c in created:
        when = datetime.fromisoformat(c).replace(tzinfo=timezone.utc)
        pid = when.strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(2)
        commit_synthetic_point(v, pid, "v", when.isoformat().replace("+00:00", "Z"),
                               {"d": [os.urandom(v.chunk_size)]}, {"point": pid})
        ids.append(pid)
    v.close()
    return ids


def _verdict(pid: str, state: str) -> None:
    v = open_vault()
    v.catalog.set_verified(VerifyRecord(pid, state, "data", "2024-01-05T00:00:00Z", ["chunk x damaged"]))
    v.close()


def test_keep_last_1_with_failed_newest_keeps_the_older_good_point() -> None:
    old, good, bad = _points(["2024-01-01T08:00:00", "2024-01-02T08:00:00", "2024-01-03T08:00:00"])
    _verdict(bad, "failed")
    res = json.loads(cutpoint("prune", "v", "--keep-last", "1", "--json", check=True).out)
    kept = {k["point"]: k["reasons"] for k in res["keep"]}
    assert kept == {bad: ["last 1"], good: ["newest good"]}, res
    assert [r["point"] for r in res["remove"]] == [old]
    assert points() == [good, bad]


def test_text_output_names_the_reason() -> None:
    good, bad = _points(["2024-01-02T08:00:00", "2024-01-03T08:00:00"])
    _verdict(bad, "failed")
    out = cutpoint("prune", "v", "--keep-last", "1", "--dry-run", check=True).out
    row = next(line for line in out.splitlines() if good in line)
    assert row.startswith("keep") and "newest good" in row, out


def test_verified_ok_and_unverified_points_count_as_good() -> None:
    a, b, c = _points(["2024-01-01T08:00:00", "2024-01-02T08:00:00", "2024-01-03T08:00:00"])
    _verdict(c, "ok")
    res = json.loads(cutpoint("prune", "v", "--keep-last", "1", "--dry-run", "--json", check=True).out)
    assert {k["point"]: k["reasons"] for k in res["keep"]} == {c: ["last 1"]}     # no extra point kept
    _verdict(c, "failed")
    res = json.loads(cutpoint("prune", "v", "--keep-last", "1", "--json", check=True).out)
    assert {k["point"]: k["reasons"] for k in res["keep"]} == {c: ["last 1"], b: ["newest good"]}   # b unverified


def test_every_point_failed_keeps_only_what_the_rules_keep() -> None:
    a, b = _points(["2024-01-01T08:00:00", "2024-01-02T08:00:00"])
    _verdict(a, "failed")
    _verdict(b, "failed")
    res = json.loads(cutpoint("prune", "v", "--keep-last", "1", "--json", check=True).out)
    assert [k["point"] for k in res["keep"]] == [b] and [r["point"] for r in res["remove"]] == [a]
