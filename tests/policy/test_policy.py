"""Policies: validation names the wrong field, files round-trip, and slot times follow the zone across DST."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cutpoint.policy import files
from cutpoint.policy.model import Policy, PolicyError
from cutpoint.policy.schedule import latest_slot, next_slot, slots_between, upcoming
from tests.helpers import cutpoint

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def _p(schedule: dict, tz: str = "Europe/Berlin", **extra) -> Policy:
    return Policy.from_dict({"name": "p", "timezone": tz, "schedule": schedule, **extra})


def _local(ts: list[datetime], tz=BERLIN) -> list[str]:
    return [t.astimezone(tz).strftime("%m-%d %H:%M %Z") for t in ts]


@pytest.mark.parametrize("data, field", [
    ({"name": "p"}, "schedule"),
    ({"name": "p", "schedule": {"frequency": "monthly"}}, "schedule.frequency"),
    ({"name": "p", "schedule": {"frequency": "seconds", "every": 3}}, "schedule.frequency"),   # tests only
    ({"name": "p", "schedule": {"frequency": "hourly", "every": 5}}, "schedule.every"),
    ({"name": "p", "schedule": {"frequency": "hourly", "every": 4, "window_hours": 25}}, "schedule.window_hours"),
    ({"name": "p", "schedule": {"frequency": "hourly", "every": 4, "window_start": "8"}}, "schedule.window_start"),
    ({"name": "p", "schedule": {"frequency": "daily", "time": "25:00"}}, "schedule.time"),
    ({"name": "p", "schedule": {"frequency": "daily"}}, "schedule.time"),
    ({"name": "p", "schedule": {"frequency": "daily", "time": "02:00", "days": ["mon"]}}, "schedule.days"),
    ({"name": "p", "schedule": {"frequency": "weekly", "time": "02:00"}}, "schedule.days"),
    ({"name": "p", "schedule": {"frequency": "weekly", "time": "02:00", "days": ["mon", "funday"]}}, "schedule.days"),
    ({"name": "p", "schedule": {"frequency": "daily", "time": "02:00"}, "timezone": "Mars/Olympus"}, "timezone"),
    ({"name": "p", "schedule": {"frequency": "daily", "time": "02:00"}, "consistency": "eventual"}, "consistency"),
    ({"name": "p", "schedule": {"frequency": "daily", "time": "02:00"}, "retention": {"daily": -2}},
     "retention.daily"),
    ({"name": "p", "schedule": {"frequency": "daily", "time": "02:00"}, "retention": {"daily": "7"}},
     "retention.daily"),
    ({"name": "p", "schedule": {"frequency": "daily", "time": "02:00"}, "retention": {"last": 0}}, "retention"),
    ({"name": "p", "schedule": {"frequency": "daily", "time": "02:00"}, "retention": {"hourly": 3}},
     "retention.hourly"),
    ({"name": "p", "schedule": {"frequency": "daily", "time": "02:00"}, "colour": "red"}, "colour"),
    ({"name": "../etc", "schedule": {"frequency": "daily", "time": "02:00"}}, "name"),
    ([1, 2], "(top level)"),
])
def test_invalid_policies_name_the_field(data, field) -> None:
    with pytest.raises(PolicyError) as e:
        Policy.from_dict(data)
    assert e.value.field == field
    assert f"{field}: " in str(e.value)


def test_defaults_and_normalisation() -> None:
    p = Policy.from_dict({"name": "w", "schedule": {"frequency": "weekly", "time": "2:05",
                                                    "days": "Sunday, wed"}})
    assert p.timezone == "UTC" and p.consistency is None and p.retention.last == 7
    assert "consistency" not in p.to_dict()
    assert Policy.from_dict({"name": "a", "consistency": "application",
                             "schedule": {"frequency": "daily", "time": "01:00"}}).consistency == "app"
    assert p.schedule.days == ("wed", "sun") and p.schedule.time == "02:05"
    h = Policy.from_dict({"name": "h", "schedule": {"frequency": "hourly", "every": 6}})
    assert (h.schedule.window_start, h.schedule.window_hours) == ("00:00", 24)


def test_yaml_and_json_files_round_trip(tmp_path: Path) -> None:
    # an unquoted 12:30 is a time, not YAML 1.1's sexagesimal 750
    y = tmp_path / "p.yaml"
    y.write_text("name: lunch\ntimezone: Europe/Berlin\nschedule:\n  frequency: weekly\n  days: [mon, fri]\n"
                 "  time: 12:30\nretention: {last: 3, weekly: 8, monthly: -1}\n")
    p = files.load(y)
    assert p.schedule.time == "12:30" and p.retention.monthly == -1
    for fmt in ("yaml", "json"):                    # what 'cutpoint policy show' prints reads back the same
        (tmp_path / f"out.{fmt}").write_text(files.dumps(p, fmt))
        assert files.load(tmp_path / f"out.{fmt}") == p
    assert json.loads((tmp_path / "out.json").read_text())["schedule"]["days"] == ["mon", "fri"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nschedule: [\n")
    with pytest.raises(Exception, match="not valid YAML"):
        files.load(bad)


def test_daily_across_dst_spring_forward_and_fall_back() -> None:
    p = _p({"frequency": "daily", "time": "02:30"})
    spring = slots_between(p, datetime(2024, 3, 29, tzinfo=UTC), datetime(2024, 4, 2, tzinfo=UTC))
    # 02:30 does not exist on 31 March: it runs 03:30 CEST, the same distance after the gap
    assert _local(spring) == ["03-29 02:30 CET", "03-30 02:30 CET", "03-31 03:30 CEST", "04-01 02:30 CEST"]
    assert [t.hour for t in spring] == [1, 1, 1, 0]
    fall = slots_between(p, datetime(2024, 10, 25, tzinfo=UTC), datetime(2024, 10, 29, tzinfo=UTC))
    # 02:30 exists twice on 27 October: it runs once, at the first (CEST) one
    assert _local(fall) == ["10-25 02:30 CEST", "10-26 02:30 CEST", "10-27 02:30 CEST", "10-28 02:30 CET"]
    assert fall[2] == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)


def test_hourly_is_wall_clock_and_never_doubles_across_dst() -> None:
    p = _p({"frequency": "hourly", "every": 4})
    spring = slots_between(p, datetime(2024, 3, 30, 22, tzinfo=UTC), datetime(2024, 3, 31, 21, 59, tzinfo=UTC))
    assert _local(spring) == ["03-31 00:00 CET", "03-31 04:00 CEST", "03-31 08:00 CEST", "03-31 12:00 CEST",
                              "03-31 16:00 CEST", "03-31 20:00 CEST"]
    fall = slots_between(p, datetime(2024, 10, 26, 21, tzinfo=UTC), datetime(2024, 10, 27, 22, 59, tzinfo=UTC))
    assert _local(fall) == ["10-27 00:00 CEST", "10-27 04:00 CET", "10-27 08:00 CET", "10-27 12:00 CET",
                            "10-27 16:00 CET", "10-27 20:00 CET"]
    # a slot inside the spring gap moves to the first instant after it and does not collide with 03:00
    q = _p({"frequency": "hourly", "every": 4, "window_start": "02:00", "window_hours": 8})
    on = slots_between(q, datetime(2024, 3, 30, 22, tzinfo=UTC), datetime(2024, 3, 31, 21, tzinfo=UTC))
    assert _local(on) == ["03-31 03:00 CEST", "03-31 06:00 CEST"]


def test_window_past_midnight_and_weekly_days() -> None:
    p = _p({"frequency": "hourly", "every": 4, "window_start": "22:00", "window_hours": 12}, tz="UTC")
    got = slots_between(p, datetime(2024, 5, 1, 12, tzinfo=UTC), datetime(2024, 5, 2, 12, tzinfo=UTC))
    assert [t.strftime("%d %H:%M") for t in got] == ["01 22:00", "02 02:00", "02 06:00"]
    w = _p({"frequency": "weekly", "days": ["sun", "wed"], "time": "23:00"})
    got = upcoming(w, datetime(2024, 12, 27, tzinfo=UTC), 4)        # across a year boundary
    assert _local(got) == ["12-29 23:00 CET", "01-01 23:00 CET", "01-05 23:00 CET", "01-08 23:00 CET"]
    assert latest_slot(w, datetime(2025, 1, 4, tzinfo=UTC)) == got[1]
    assert next_slot(w, got[1]) == got[2]


def test_seconds_schedules_are_for_tests_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUTPOINT_TEST_SCHEDULES", "1")
    p = _p({"frequency": "seconds", "every": 3})
    got = slots_between(p, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 0, 0, 10, tzinfo=UTC))
    assert [t.second for t in got] == [3, 6, 9]


def test_policy_cli(tmp_path: Path) -> None:
    r = cutpoint("policy", "create", "nightly", "--daily", "01:30", "--keep-last", "3", "--keep-daily", "7",
                 "--timezone", "Europe/Berlin", "--json", check=True)
    assert json.loads(r.out)["retention"]["daily"] == 7
    r = cutpoint("policy", "create", "bad", "--hourly", "5")
    assert r.code == 2 and "schedule.every" in r.err, r.err
    r = cutpoint("policy", "create", "nightly", "--daily", "02:00")
    assert r.code == 2 and "already exists" in r.err
    y = tmp_path / "weekly.yaml"
    y.write_text("schedule: {frequency: weekly, days: [sat], time: 03:00}\nretention: {weekly: 4}\n")
    cutpoint("policy", "create", "weekly", "--file", str(y), check=True)
    r = cutpoint("policy", "create", "x", "--file", str(y), "--daily", "01:00")
    assert r.code == 2 and "do not mix" in r.err
    shown = json.loads(cutpoint("policy", "show", "weekly", "--json", "--next", "3", check=True).out)
    assert shown["schedule"]["days"] == ["sat"] and len(shown["next_runs"]) == 3
    yml = cutpoint("policy", "show", "nightly", "--yaml", check=True).out
    (tmp_path / "copy.yaml").write_text(yml)
    cutpoint("policy", "create", "copy", "--file", str(tmp_path / "copy.yaml"), check=True)  # name from the arg
    names = [p["name"] for p in json.loads(cutpoint("policy", "list", "--json", check=True).out)]
    assert names == ["copy", "nightly", "weekly"]
    assert "nightly" in cutpoint("policy", "list", check=True).out
    cutpoint("policy", "delete", "copy", check=True)
    r = cutpoint("policy", "show", "copy")
    assert r.code == 3 and "unknown policy 'copy'" in r.err


def test_vm_set_policy(bare_qemu, tmp_path: Path) -> None:
    from tests.helpers import blockdev_args, make_image
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "16M"), "sys"))
    cutpoint("vm", "add", "web", "--qmp", str(vm.qmp), check=True)
    r = cutpoint("vm", "set", "web", "--policy", "nosuch")
    assert r.code == 3 and "unknown policy" in r.err
    cutpoint("policy", "create", "nightly", "--daily", "01:30", check=True)
    cutpoint("vm", "set", "web", "--policy", "nightly", check=True)
    assert json.loads(cutpoint("vm", "list", "--json", check=True).out)[0]["policy"] == "nightly"
    r = cutpoint("policy", "delete", "nightly")
    assert r.code == 2 and "assigned to web" in r.err
    cutpoint("vm", "set", "web", "--policy", "none", check=True)
    assert json.loads(cutpoint("vm", "list", "--json", check=True).out)[0]["policy"] is None
    cutpoint("policy", "delete", "nightly", check=True)
