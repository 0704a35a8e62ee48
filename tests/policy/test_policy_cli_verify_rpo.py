"""``policy create`` flags for the RPO grace and a verify schedule, the same fields a policy file holds."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import cutpoint


def test_policy_create_with_verify_and_rpo_grace(tmp_path: Path) -> None:
    r = cutpoint("policy", "create", "n", "--daily", "01:30", "--rpo-grace", "120", "--verify-weekly", "sun",
                 "--verify-at", "05:00", "--json", check=True)
    d = json.loads(r.out)
    assert d["rpo_grace_minutes"] == 120
    assert d["verify"] == {"frequency": "weekly", "days": ["sun"], "time": "05:00", "read_data": True}
    r = cutpoint("policy", "create", "s", "--daily", "01:30", "--verify-daily", "06:15", "--verify-structure",
                 "--json", check=True)
    assert json.loads(r.out)["verify"] == {"frequency": "daily", "time": "06:15", "read_data": False}
    out = cutpoint("policy", "show", "n", check=True).out
    assert "verify weekly on sun at 05:00 (read data)" in out and "RPO grace 120 min" in out
    r = cutpoint("policy", "create", "x", "--daily", "01:30", "--verify-weekly", "sun")
    assert r.code == 2 and "verify.time" in r.err, r.err
    r = cutpoint("policy", "create", "x", "--daily", "01:30", "--rpo-grace", "-1")
    assert r.code == 2 and "rpo_grace_minutes" in r.err, r.err
    r = cutpoint("policy", "create", "x", "--daily", "01:30", "--verify-structure")
    assert r.code == 2 and "--verify-daily" in r.err, r.err
    y = tmp_path / "p.yaml"
    y.write_text("schedule: {frequency: daily, time: 02:00}\n")
    r = cutpoint("policy", "create", "x", "--file", str(y), "--rpo-grace", "5")
    assert r.code == 2 and "do not mix" in r.err
    # a policy without the new fields prints exactly as before
    d = json.loads(cutpoint("policy", "create", "plain", "--daily", "01:30", "--json", check=True).out)
    assert set(d) == {"name", "timezone", "schedule", "retention"}
