"""The retention policy on synthetic dates: restic's semantics, bucket edges at day, ISO week, month and year
boundaries, several reasons per point, unlimited rules, and time zones."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cutpoint.vault.retention import Retention, decide

UTC = timezone.utc


def t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def kept(points: dict[str, str], policy: Retention, **kw) -> dict[str, tuple[str, ...]]:
    return {d.id: d.reasons for d in decide([(k, t(v)) for k, v in points.items()], policy, **kw) if d.keep}


def test_keep_last_takes_the_newest_whatever_the_input_order() -> None:
    pts = {f"p{i}": f"2024-03-0{i}T12:00:00" for i in range(1, 6)}
    assert kept(dict(reversed(list(pts.items()))), Retention(last=3)) == {"p5": ("last 1",), "p4": ("last 2",),
                                                                     "p3": ("last 3",)}
    assert kept(pts, Retention(last=10)).keys() == pts.keys()


def test_daily_keeps_the_newest_of_each_day_and_skips_days_without_points() -> None:
    pts = {"a": "2024-03-01T08:00:00", "b": "2024-03-01T20:00:00", "c": "2024-03-04T01:00:00",
           "d": "2024-03-04T00:30:00", "e": "2024-02-28T10:00:00"}
    assert kept(pts, Retention(daily=2)) == {"c": ("daily 2024-03-04",), "b": ("daily 2024-03-01",)}
    assert kept(pts, Retention(daily=-1)) == {"c": ("daily 2024-03-04",), "b": ("daily 2024-03-01",),
                                           "e": ("daily 2024-02-28",)}


def test_weekly_uses_iso_weeks_across_the_year_boundary() -> None:
    # 2024-12-30 (Mon) and 2025-01-02 are ISO week 2025-W01; 2024-12-29 (Sun) is 2024-W52
    pts = {"sun": "2024-12-29T12:00:00", "mon": "2024-12-30T12:00:00", "thu": "2025-01-02T12:00:00"}
    assert kept(pts, Retention(weekly=2)) == {"thu": ("weekly 2025-W01",), "sun": ("weekly 2024-W52",)}
    # 2020-12-31 is in 2020-W53; 2021-01-03 (Sun) too; 2021-01-04 starts 2021-W01
    pts = {"a": "2020-12-31T00:00:00", "b": "2021-01-03T23:59:59", "c": "2021-01-04T00:00:00"}
    assert kept(pts, Retention(weekly=5)) == {"c": ("weekly 2021-W01",), "b": ("weekly 2020-W53",)}


def test_monthly_and_yearly_at_the_year_boundary() -> None:
    pts = {"old": "2023-12-31T23:59:59", "new": "2024-01-01T00:00:00", "mid": "2024-06-15T00:00:00",
           "ancient": "2021-05-01T00:00:00"}
    assert kept(pts, Retention(monthly=3)) == {"mid": ("monthly 2024-06",), "new": ("monthly 2024-01",),
                                            "old": ("monthly 2023-12",)}
    assert kept(pts, Retention(yearly=2)) == {"mid": ("yearly 2024",), "old": ("yearly 2023",)}
    assert kept(pts, Retention(yearly=-1))["ancient"] == ("yearly 2021",)


def test_a_point_kept_by_several_rules_lists_every_reason_and_the_rest_go() -> None:
    base = t("2024-01-31T12:00:00")
    pts = [(f"p{i:02d}", base - timedelta(days=i)) for i in range(40)]
    ds = decide(pts, Retention(last=2, daily=3, weekly=2, monthly=2, yearly=1))
    by = {d.id: d for d in ds}
    assert [d.id for d in ds] == [p for p, _ in pts]                       # newest first
    assert by["p00"].reasons == ("last 1", "daily 2024-01-31", "weekly 2024-W05", "monthly 2024-01", "yearly 2024")
    assert by["p01"].reasons == ("last 2", "daily 2024-01-30")
    assert by["p02"].reasons == ("daily 2024-01-29",)
    assert by["p03"].reasons == ("weekly 2024-W04",)                      # Sun 2024-01-28 ends week 4
    assert by["p31"].reasons == ("monthly 2023-12",)                       # 2023-12-31: newest of December
    assert sum(d.keep for d in ds) == 5 and not by["p04"].keep and not by["p39"].keep


def test_time_zone_moves_the_day_bucket() -> None:
    pts = {"late": "2024-01-01T23:30:00", "early": "2024-01-01T00:30:00"}
    assert kept(pts, Retention(daily=5)) == {"late": ("daily 2024-01-01",)}
    plus2 = timezone(timedelta(hours=2))
    assert kept(pts, Retention(daily=5), tz=plus2) == {"late": ("daily 2024-01-02",), "early": ("daily 2024-01-01",)}


def test_empty_policy() -> None:
    assert Retention().empty() and not Retention(yearly=1).empty()
    assert kept({"a": "2024-01-01T00:00:00"}, Retention()) == {"a": ("newest good",)}     # never the last good one
    assert Retention(last=1, weekly=-1).describe() == "keep last 1, weekly all"


def test_newest_good_point_is_kept_when_no_rule_keeps_it() -> None:
    pts = {"old": "2024-01-01T00:00:00", "good": "2024-01-02T00:00:00", "bad": "2024-01-03T00:00:00"}
    assert kept(pts, Retention(last=1), bad={"bad"}) == {"bad": ("last 1",), "good": ("newest good",)}
    assert kept(pts, Retention(last=2), bad={"bad"}) == {"bad": ("last 1",), "good": ("last 2",)}   # already kept
    assert kept(pts, Retention(last=1), bad=set(pts)) == {"bad": ("last 1",)}                        # none good
