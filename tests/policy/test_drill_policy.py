"""A policy's ``drill``: after every Nth backup or on a schedule, newest or a random older point; bad ones named."""

from __future__ import annotations

import pytest

from cutpoint.policy.model import Policy, PolicyError


def _p(drill: object) -> Policy:
    return Policy.from_dict({"name": "p", "schedule": {"frequency": "daily", "time": "02:00"}, "drill": drill})


def test_drill_forms_round_trip() -> None:
    a = _p({"after_backups": 7})
    assert a.drill is not None and a.drill.after_backups == 7 and a.drill.schedule is None
    assert a.to_dict()["drill"] == {"after_backups": 7, "pick": "latest"}
    assert Policy.from_dict(a.to_dict()) == a
    w = _p({"frequency": "weekly", "days": ["sun"], "time": "05:00", "pick": "random"})
    assert w.drill is not None and w.drill.pick == "random" and w.drill.schedule is not None
    assert Policy.from_dict(w.to_dict()) == w
    dp = w.drill_policy()
    assert dp is not None and dp.schedule == w.drill.schedule and a.drill_policy() is None
    assert "drill" not in Policy.from_dict({"name": "p", "schedule": {"frequency": "daily", "time": "02:00"}}).to_dict()


@pytest.mark.parametrize("drill, field", [
    ({"after_backups": 0}, "drill.after_backups"), ({"pick": "oldest", "after_backups": 2}, "drill.pick"),
    ({"after_backups": 2, "frequency": "weekly"}, "drill"), ({}, "drill"), ("weekly", "drill"),
    ({"frequency": "monthly"}, "drill.frequency")])
def test_bad_drill_settings_name_the_field(drill: object, field: str) -> None:
    with pytest.raises(PolicyError, match=field.replace(".", r"\.")):
        _p(drill)
