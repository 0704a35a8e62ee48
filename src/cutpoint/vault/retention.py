"""Retention policy: which points a ``--keep-*`` policy keeps, and why. Pure: no vault, no clock, no I/O.

Semantics are restic's (``restic forget``), which Proxmox Backup Server shares for each rule on its own:

* points are considered newest first;
* ``keep-last N`` keeps the N newest points;
* ``keep-daily N`` keeps, for each of the N most recent *days that have points*, the newest point of that day; days
  without points do not count. ``weekly`` (ISO 8601 weeks, so 2024-12-30 is in week 2025-W01), ``monthly`` and
  ``yearly`` likewise;
* every rule is applied to all points independently, so a point can be kept by several rules and is listed with
  every reason; a point no rule keeps is removed;
* ``-1`` means unlimited (every bucket), ``0`` means the rule is off. A policy with no rule on keeps everything
  and is refused by the caller, so a forgotten option can never empty a VM's history;
* beyond restic: the newest *good* point (one not listed in ``bad``: its last verify failed, or its catalog row is
  unreadable) is always kept, with the reason ``newest good``, so a damaged newest point can never cost a VM its
  last restorable one.

Buckets use the points' creation time in ``tz`` (UTC by default: point ids and timestamps are UTC). Issue 7's
scheduler reuses this function with its own clock by passing the points it has. :class:`Retention` is the one
retention type: the CLI's ``--keep-*`` flags and a policy's ``retention`` mapping both become one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone, tzinfo

RULES: tuple[tuple[str, Callable[[datetime], str]], ...] = (
    ("daily", lambda t: t.strftime("%Y-%m-%d")),
    ("weekly", lambda t: "%04d-W%02d" % t.isocalendar()[:2]),
    ("monthly", lambda t: t.strftime("%Y-%m")),
    ("yearly", lambda t: t.strftime("%Y")),
)


NEWEST_GOOD = "newest good"
RETENTION_KEYS = ("last", "daily", "weekly", "monthly", "yearly")    # Retention's fields, the --keep-* rules


@dataclass(frozen=True)
class Retention:
    """How many points each rule keeps (0 off, -1 all)."""

    last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def empty(self) -> bool:
        return not any((self.last, self.daily, self.weekly, self.monthly, self.yearly))

    def describe(self) -> str:
        parts = [f"{name} {'all' if n < 0 else n}" for name, n in (
            ("last", self.last), ("daily", self.daily), ("weekly", self.weekly), ("monthly", self.monthly),
            ("yearly", self.yearly)) if n]
        return "keep " + ", ".join(parts) if parts else "no rule"

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    id: str
    created: datetime
    keep: bool
    reasons: tuple[str, ...]


def decide(points: Iterable[tuple[str, datetime]], policy: Retention, tz: tzinfo = timezone.utc,
           bad: Collection[str] = ()) -> list[Decision]:
    """One decision per point, newest first. ``points`` are (id, creation time, timezone-aware); ``bad`` names the
    points that do not count as good (failed verification, unreadable row)."""
    ordered = sorted(points, key=lambda p: (p[1], p[0]), reverse=True)
    reasons: dict[str, list[str]] = {pid: [] for pid, _ in ordered}
    if policy.last:
        for n, (pid, _) in enumerate(ordered[:None if policy.last < 0 else policy.last], 1):
            reasons[pid].append(f"last {n}")
    for name, bucket_of in RULES:
        left = getattr(policy, name)
        seen: str | None = None
        for pid, created in ordered:
            if left == 0:
                break
            bucket = bucket_of(created.astimezone(tz))
            if bucket != seen:          # newest first: the first point met in a bucket is its newest
                seen = bucket
                reasons[pid].append(f"{name} {bucket}")
                left -= 1
    newest_good = next((pid for pid, _ in ordered if pid not in bad), None)
    if newest_good is not None and not reasons[newest_good]:
        reasons[newest_good].append(NEWEST_GOOD)
    return [Decision(pid, created, bool(reasons[pid]), tuple(reasons[pid])) for pid, created in ordered]
