"""The policy interval the RPO alert measures from: the gap of slots a time falls in, in the policy's zone."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cutpoint.policy.model import Policy
from cutpoint.policy.schedule import interval_at

UTC = timezone.utc
H = timedelta(hours=1)


def _p(schedule: dict, tz: str = "UTC") -> Policy:
    return Policy.from_dict({"name": "p", "timezone": tz, "schedule": schedule})


def test_interval_follows_the_gap_the_time_falls_in() -> None:
    weekly = _p({"frequency": "weekly", "days": ["tue", "fri"], "time": "23:15"})
    assert interval_at(weekly, datetime(2025, 1, 1, tzinfo=UTC)) == 72 * H          # Tue 23:15 -> Fri 23:15
    assert interval_at(weekly, datetime(2025, 1, 4, tzinfo=UTC)) == 96 * H          # Fri -> Tue
    window = _p({"frequency": "hourly", "every": 4, "window_start": "08:00", "window_hours": 12})
    assert interval_at(window, datetime(2025, 1, 1, 9, tzinfo=UTC)) == 4 * H
    assert interval_at(window, datetime(2025, 1, 1, 20, tzinfo=UTC)) == 16 * H      # 16:00 -> 08:00 next day
    daily = _p({"frequency": "daily", "time": "01:30"}, tz="Europe/Berlin")
    assert interval_at(daily, datetime(2024, 3, 31, 12, tzinfo=UTC)) == 23 * H      # 31 Mar -> 1 Apr (CEST)
    assert interval_at(daily, datetime(2024, 6, 1, 12, tzinfo=UTC)) == 24 * H
