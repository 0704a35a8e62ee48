"""When a policy's backups are due: slot times in UTC computed from wall-clock times in the policy's time zone.

Rules (also in docs/design.md, "Service and policies"):

* Slots are wall-clock times in the policy's zone: daily at ``time``; weekly at ``time`` on ``days``; hourly at
  ``window_start + k*every`` hours for every ``k*every < window_hours`` (a window may run past midnight; its slots
  belong to the day the window opened, which is what ``days`` would filter if hourly had days).
* A wall-clock time that does not exist (spring forward, e.g. 02:30 in Europe/Berlin on the last Sunday of March)
  runs at the same distance after the gap's start, i.e. shifted forward by the gap (03:30 local): a backup is never
  silently dropped on the short day.
* A wall-clock time that exists twice (fall back) runs once, at its first occurrence (``fold=0``).
* Two slots that land on the same instant after those rules are one slot.
* ``seconds`` (tests only) slots are multiples of ``every`` seconds since the Unix epoch, independent of the zone.

Everything returned is an aware UTC ``datetime``; callers never do local-time arithmetic themselves.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from .model import DAYS, Policy

UTC = timezone.utc


def _parse(hhmm: str) -> time:
    h, m = hhmm.split(":")
    return time(int(h), int(m))


def _local_naive(policy: Policy, day: date) -> list[datetime]:
    """The naive local wall-clock slot times of the window or time that opens on ``day``."""
    s = policy.schedule
    if s.frequency == "daily":
        return [datetime.combine(day, _parse(s.time or "00:00"))]
    if s.frequency == "weekly":
        return [datetime.combine(day, _parse(s.time or "00:00"))] if DAYS[day.weekday()] in s.days else []
    if s.frequency == "hourly":
        start = datetime.combine(day, _parse(s.window_start or "00:00"))
        every = s.every or 24
        return [start + timedelta(hours=h) for h in range(0, s.window_hours or 24, every)]
    raise ValueError(f"no wall-clock slots for frequency {s.frequency!r}")


def _to_utc(policy: Policy, naive: datetime) -> datetime:
    """Wall-clock → UTC with ``fold=0``: the first occurrence of a repeated time; a skipped time moves forward by
    the gap (zoneinfo reads a non-existent time with the offset in force before the transition)."""
    return naive.replace(tzinfo=policy.tz, fold=0).astimezone(UTC)


def slots_between(policy: Policy, start: datetime, end: datetime) -> list[datetime]:
    """All slots ``t`` with ``start < t <= end``, sorted, without duplicates."""
    if end <= start:
        return []
    s = policy.schedule
    if s.frequency == "seconds":
        every = s.every or 1
        first = int(start.timestamp()) // every * every + every
        last = int(end.timestamp()) // every * every
        return [datetime.fromtimestamp(t, UTC) for t in range(first, last + 1, every)]
    tz = policy.tz
    # windows open on local days; one either side covers windows past midnight and any zone offset
    day = start.astimezone(tz).date() - timedelta(days=1)
    stop = end.astimezone(tz).date() + timedelta(days=1)
    out: set[datetime] = set()
    while day <= stop:
        for naive in _local_naive(policy, day):
            t = _to_utc(policy, naive)
            if start < t <= end:
                out.add(t)
        day += timedelta(days=1)
    return sorted(out)


def latest_slot(policy: Policy, now: datetime) -> datetime | None:
    """The most recent slot at or before ``now`` (within the last 8 days, which covers every weekly schedule)."""
    found = slots_between(policy, now - _horizon(policy), now)
    return found[-1] if found else None


def next_slot(policy: Policy, after: datetime) -> datetime | None:
    """The first slot strictly after ``after``."""
    found = slots_between(policy, after, after + _horizon(policy))
    return found[0] if found else None


def interval_at(policy: Policy, t: datetime) -> timedelta:
    """The gap between the slot at or before ``t`` and the next one: the policy's interval at ``t`` (24 h for daily
    but 23 or 25 on DST days; for weekly or windowed schedules the gap that ``t`` falls in)."""
    before, after = latest_slot(policy, t), next_slot(policy, t)
    if before is None or after is None:
        return _horizon(policy)
    return after - before


def upcoming(policy: Policy, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` slots after ``after`` (what ``cutpoint policy next`` and the API show)."""
    out: list[datetime] = []
    t: datetime | None = after
    while t is not None and len(out) < count:
        t = next_slot(policy, t)
        if t is not None:
            out.append(t)
    return out


def _horizon(policy: Policy) -> timedelta:
    s = policy.schedule
    if s.frequency == "seconds":
        return timedelta(seconds=(s.every or 1) * 2)
    return timedelta(days=8)
