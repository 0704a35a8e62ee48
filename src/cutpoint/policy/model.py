"""Policies: when a VM is backed up, how long its points are kept, and in which time zone both are read; optionally
when its points are verified (``verify``) and how late a backup may be before the RPO alert (``rpo_grace_minutes``).

A policy is plain data (a dict that round-trips through YAML and JSON files and the API) validated in one place,
:func:`Policy.from_dict`, so the CLI, files and the REST API refuse the same things with the same message, naming
the field that is wrong. Schedules follow Azure's Enhanced policy: every 4/6/8/12 hours within a daily window,
daily at a time, or weekly on chosen days at a time, all in the policy's time zone (see ``schedule.py`` for DST).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .. import names
from ..errors import UsageError
from ..units import parse_size
from ..vault import location
from ..vault.retention import RETENTION_KEYS, Retention

FREQUENCIES = ("hourly", "daily", "weekly")
HOURLY_EVERY = (4, 6, 8, 12)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = {"monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu", "friday": "fri",
              "saturday": "sat", "sunday": "sun"}
CONSISTENCY = ("app", "crash")      # as `cutpoint backup --consistency`; unset: the VM's setting
DEFAULT_RPO_GRACE_MINUTES = 60
"""How long past its policy's interval a VM may go without a successful backup before the RPO alert fires."""
MAX_RPO_GRACE_MINUTES = 7 * 24 * 60
TEST_SCHEDULES_ENV = "CUTPOINT_TEST_SCHEDULES"
"""Set to 1 to allow ``frequency: seconds`` (a schedule every few seconds), which only tests need."""

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class PolicyError(UsageError):
    """A policy is invalid; ``field`` names the offending field (dotted, e.g. ``schedule.time``)."""

    def __init__(self, name: str | None, field_name: str, problem: str) -> None:
        where = f"policy {name!r}: " if name else "policy: "
        super().__init__(f"{where}{field_name}: {problem}")
        self.field = field_name
        self.problem = problem


@dataclass(frozen=True)
class Schedule:
    frequency: str
    time: str | None = None              # daily, weekly: "HH:MM" local time
    days: tuple[str, ...] = ()           # weekly
    every: int | None = None             # hourly: hours; seconds (tests only): seconds
    window_start: str | None = None      # hourly: "HH:MM" local time the window opens
    window_hours: int | None = None      # hourly: window length, 1..24

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"frequency": self.frequency}
        if self.frequency in ("daily", "weekly"):
            d["time"] = self.time
        if self.frequency == "weekly":
            d["days"] = list(self.days)
        if self.frequency in ("hourly", "seconds"):
            d["every"] = self.every
        if self.frequency == "hourly":
            d["window_start"] = self.window_start
            d["window_hours"] = self.window_hours
        return d


@dataclass(frozen=True)
class VerifySchedule:
    """When the points of a policy's VMs are verified (``cutpoint verify [--read-data]`` as a scheduled job)."""

    schedule: Schedule
    read_data: bool = True               # read, authenticate and hash every chunk (PBS's verify); else structure

    def to_dict(self) -> dict[str, Any]:
        return {**self.schedule.to_dict(), "read_data": self.read_data}


@dataclass(frozen=True)
class DrillSchedule:
    """When restore drills of a policy's VMs run: after every Nth backup (``after_backups``), or on a schedule
    (weekly, ...); ``pick`` says which point: the newest, or a random older one (ransomware shows itself late)."""

    schedule: Schedule | None = None
    after_backups: int = 0
    pick: str = "latest"                 # 'latest' | 'random'

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = self.schedule.to_dict() if self.schedule is not None else {}
        if self.after_backups:
            d["after_backups"] = self.after_backups
        return {**d, "pick": self.pick}


@dataclass(frozen=True)
class CopyPolicy:
    """Offsite copies of a policy's VMs' points ('cutpoint copy' as a job, into a vault made with 'vault init
    --copy-of'): after every successful backup (``after_backup``), or at a schedule's slots (daily, ...)."""

    to: str                              # the target vault: an absolute directory or s3://BUCKET/PREFIX
    schedule: Schedule | None = None
    after_backup: bool = False
    limit_rate: int | None = None        # bytes per second written to the target

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = self.schedule.to_dict() if self.schedule is not None else {"after_backup": True}
        d["to"] = self.to
        if self.limit_rate:
            d["limit_rate"] = self.limit_rate
        return d


@dataclass(frozen=True)
class Policy:
    name: str
    schedule: Schedule
    retention: Retention = field(default_factory=lambda: Retention(last=7))
    consistency: str | None = None       # None: each VM's own setting (cutpoint vm set --consistency), else crash
    timezone: str = "UTC"
    rpo_grace_minutes: int | None = None  # None: DEFAULT_RPO_GRACE_MINUTES
    verify: VerifySchedule | None = None  # scheduled verify of its VMs' points; None: none
    drill: DrillSchedule | None = None    # restore drills of its VMs' points; None: none
    copy: CopyPolicy | None = None        # offsite copies of its VMs' points; None: none

    @property
    def rpo_grace(self) -> int:
        return DEFAULT_RPO_GRACE_MINUTES if self.rpo_grace_minutes is None else self.rpo_grace_minutes

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "timezone": self.timezone}
        if self.consistency is not None:
            d["consistency"] = self.consistency
        if self.rpo_grace_minutes is not None:
            d["rpo_grace_minutes"] = self.rpo_grace_minutes
        out = {**d, "schedule": self.schedule.to_dict(), "retention": self.retention.to_dict()}
        if self.verify is not None:
            out["verify"] = self.verify.to_dict()
        if self.drill is not None:
            out["drill"] = self.drill.to_dict()
        if self.copy is not None:
            out["copy"] = self.copy.to_dict()
        return out

    def copy_policy(self) -> "Policy | None":
        """This policy with its copy schedule as *the* schedule (None without a scheduled copy)."""
        if self.copy is None or self.copy.schedule is None:
            return None
        return replace(self, schedule=self.copy.schedule, verify=None, drill=None, copy=None)

    def drill_policy(self) -> "Policy | None":
        """This policy with its drill schedule as *the* schedule (None without a scheduled drill)."""
        if self.drill is None or self.drill.schedule is None:
            return None
        return replace(self, schedule=self.drill.schedule, verify=None, drill=None)

    def verify_policy(self) -> "Policy | None":
        """This policy with its verify schedule as *the* schedule: what the slot functions compute verify runs of."""
        return replace(self, schedule=self.verify.schedule, verify=None) if self.verify is not None else None

    def schedule_key(self) -> str:
        """Identifies what decides the run times: a change of it restarts the VM's schedule from now."""
        s = self.schedule.to_dict()
        return self.timezone + "|" + "|".join(f"{k}={s[k]}" for k in sorted(s))

    @classmethod
    def from_dict(cls, data: Any, name: str | None = None) -> "Policy":
        """Validate ``data`` (parsed YAML/JSON) into a policy; ``name`` overrides or supplies ``data['name']``."""
        if not isinstance(data, dict):
            raise PolicyError(name, "(top level)", f"must be a mapping, got {type(data).__name__}")
        pname = name if name is not None else data.get("name")
        if not isinstance(pname, str) or not names.is_valid(pname):
            raise PolicyError(None, "name", f"{pname!r} is not a valid name (letters, digits, '.', '_', '-'; "
                              "at most 64, starting with a letter or digit)")
        _unknown(pname, "", data, ("name", "timezone", "consistency", "schedule", "retention", "rpo_grace_minutes",
                                     "verify", "drill", "copy"))
        tz = data.get("timezone", "UTC")
        if not isinstance(tz, str) or not tz:
            raise PolicyError(pname, "timezone", f"{tz!r} is not a time zone name such as Europe/Berlin")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise PolicyError(pname, "timezone", f"unknown time zone {tz!r} (use an IANA name such as "
                              "Europe/Berlin or UTC)") from exc
        consistency = data.get("consistency")
        consistency = "app" if consistency == "application" else consistency
        if consistency is not None and consistency not in CONSISTENCY:
            raise PolicyError(pname, "consistency", f"{consistency!r} is not one of {', '.join(CONSISTENCY)} "
                              "(or leave it out: each VM's own setting)")
        if "schedule" not in data:
            raise PolicyError(pname, "schedule", "missing; e.g. {frequency: daily, time: '02:00'}")
        schedule = _schedule(pname, data["schedule"])
        retention = _retention(pname, data.get("retention", {"last": 7}))
        grace = data.get("rpo_grace_minutes")
        if grace is not None:
            grace = _int(pname, "rpo_grace_minutes", grace, 0, MAX_RPO_GRACE_MINUTES)
        verify = _verify(pname, data["verify"]) if data.get("verify") is not None else None
        drill = _drill(pname, data["drill"]) if data.get("drill") is not None else None
        copy = _copy(pname, data["copy"]) if data.get("copy") is not None else None
        return cls(pname, schedule, retention, consistency, tz, grace, verify, drill, copy)


def _unknown(name: str, prefix: str, data: dict[str, Any], known: tuple[str, ...]) -> None:
    for k in data:
        if k not in known:
            raise PolicyError(name, f"{prefix}{k}", f"unknown field (known: {', '.join(known)})")


def _int(name: str, fld: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise PolicyError(name, fld, f"{v!r} is not a whole number")
    if not lo <= v <= hi:
        raise PolicyError(name, fld, f"{v} is out of range {lo}..{hi}")
    return v


def _hhmm(name: str, fld: str, v: Any) -> str:
    m = _HHMM.match(v) if isinstance(v, str) else None
    if not m:
        raise PolicyError(name, fld, f"{v!r} is not a time of day; write HH:MM, e.g. '02:30' (quoted in YAML)")
    return f"{int(m.group(1)):02d}:{m.group(2)}"


def _schedule(name: str, s: Any, prefix: str = "schedule") -> Schedule:
    if not isinstance(s, dict):
        raise PolicyError(name, prefix, "must be a mapping such as {frequency: daily, time: '02:00'}")
    freq = s.get("frequency")
    allowed = FREQUENCIES + (("seconds",) if os.environ.get(TEST_SCHEDULES_ENV) == "1" else ())
    if freq not in allowed:
        raise PolicyError(name, f"{prefix}.frequency", f"{freq!r} is not one of {', '.join(FREQUENCIES)}")
    if freq == "daily":
        _unknown(name, f"{prefix}.", s, ("frequency", "time"))
        return Schedule("daily", time=_hhmm(name, f"{prefix}.time", s.get("time")))
    if freq == "weekly":
        _unknown(name, f"{prefix}.", s, ("frequency", "time", "days"))
        days = s.get("days")
        if isinstance(days, str):
            days = [d for d in re.split(r"[,\s]+", days) if d]
        if not isinstance(days, list) or not days:
            raise PolicyError(name, f"{prefix}.days", "a weekly schedule needs at least one day, e.g. [sun, wed]")
        norm = []
        for d in days:
            key = _FULL_DAYS.get(str(d).strip().lower(), str(d).strip().lower())
            if key not in DAYS:
                raise PolicyError(name, f"{prefix}.days", f"{d!r} is not a day of the week ({', '.join(DAYS)})")
            norm.append(key)
        ordered = tuple(d for d in DAYS if d in norm)
        return Schedule("weekly", time=_hhmm(name, f"{prefix}.time", s.get("time")), days=ordered)
    if freq == "hourly":
        _unknown(name, f"{prefix}.", s, ("frequency", "every", "window_start", "window_hours"))
        every = s.get("every")
        if every not in HOURLY_EVERY or isinstance(every, bool):
            raise PolicyError(name, f"{prefix}.every", f"{every!r} is not one of {', '.join(map(str, HOURLY_EVERY))}"
                              " (hours between backups)")
        start = _hhmm(name, f"{prefix}.window_start", s.get("window_start", "00:00"))
        hours = _int(name, f"{prefix}.window_hours", s.get("window_hours", 24), 1, 24)
        return Schedule("hourly", every=every, window_start=start, window_hours=hours)
    _unknown(name, f"{prefix}.", s, ("frequency", "every"))
    return Schedule("seconds", every=_int(name, f"{prefix}.every", s.get("every"), 1, 3600))


def _verify(name: str, v: Any) -> "VerifySchedule":
    if not isinstance(v, dict):
        raise PolicyError(name, "verify", "must be a schedule mapping such as {frequency: weekly, days: [sun], "
                          "time: '04:00', read_data: true}")
    read_data = v.get("read_data", True)
    if not isinstance(read_data, bool):
        raise PolicyError(name, "verify.read_data", f"{read_data!r} is not true or false")
    sched = _schedule(name, {k: x for k, x in v.items() if k != "read_data"}, "verify")
    return VerifySchedule(sched, read_data)


def _drill(name: str, v: Any) -> DrillSchedule:
    if not isinstance(v, dict):
        raise PolicyError(name, "drill", "must be a mapping such as {after_backups: 7} or {frequency: weekly, "
                          "days: [sun], time: '05:00', pick: random}")
    pick = v.get("pick", "latest")
    if pick not in ("latest", "random"):
        raise PolicyError(name, "drill.pick", f"{pick!r} is not latest or random (a random older point)")
    rest = {k: x for k, x in v.items() if k not in ("pick", "after_backups")}
    if "after_backups" in v:
        if rest:
            raise PolicyError(name, "drill", "give either after_backups or a schedule (frequency ...), not both")
        return DrillSchedule(None, _int(name, "drill.after_backups", v["after_backups"], 1, 10000), pick)
    if not rest:
        raise PolicyError(name, "drill", "needs after_backups: N or a schedule (frequency: weekly, ...)")
    return DrillSchedule(_schedule(name, rest, "drill"), 0, pick)


def _copy(name: str, v: Any) -> CopyPolicy:
    if not isinstance(v, dict):
        raise PolicyError(name, "copy", "must be a mapping such as {to: 's3://offsite/web', after_backup: true} or "
                          "{to: /mnt/offsite, frequency: daily, time: '03:00'}")
    to = v.get("to")
    if not isinstance(to, str) or not to:
        raise PolicyError(name, "copy.to", f"{to!r} is not a vault: give an absolute directory or s3://BUCKET/PREFIX")
    if location.is_remote(to):
        try:
            location.parse(to, "")
        except UsageError as exc:
            raise PolicyError(name, "copy.to", str(exc)) from exc
    elif not to.startswith("/"):
        raise PolicyError(name, "copy.to", f"{to!r} is not an absolute directory (or s3://BUCKET/PREFIX)")
    rate = v.get("limit_rate")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, (int, str)):
            raise PolicyError(name, "copy.limit_rate", f"{rate!r} is not a rate such as 20M (bytes per second)")
        try:
            rate = rate if isinstance(rate, int) and rate > 0 else parse_size(str(rate))
        except UsageError as exc:
            raise PolicyError(name, "copy.limit_rate", str(exc)) from exc
    after = v.get("after_backup", False)
    if not isinstance(after, bool):
        raise PolicyError(name, "copy.after_backup", f"{after!r} is not true or false")
    rest = {k: x for k, x in v.items() if k not in ("to", "limit_rate", "after_backup")}
    if after and rest:
        raise PolicyError(name, "copy", "give either after_backup: true or a schedule (frequency ...), not both")
    if after:
        return CopyPolicy(to, None, True, rate)
    if not rest:
        raise PolicyError(name, "copy", "needs after_backup: true or a schedule (frequency: daily, time: ...)")
    return CopyPolicy(to, _schedule(name, rest, "copy"), False, rate)


def _retention(name: str, r: Any) -> Retention:
    if not isinstance(r, dict):
        raise PolicyError(name, "retention", "must be a mapping such as {last: 7, daily: 30}")
    _unknown(name, "retention.", r, RETENTION_KEYS)
    limits = {"last": 9999, "daily": 9999, "weekly": 5163, "monthly": 1188, "yearly": 99}
    # -1 keeps every bucket (the vault's retention semantics), 0 turns the rule off
    vals = {k: _int(name, f"retention.{k}", r.get(k, 0), -1, limits[k]) for k in RETENTION_KEYS}
    if not any(vals.values()):
        raise PolicyError(name, "retention", "keeps no point at all; set at least one of "
                          + ", ".join(RETENTION_KEYS))
    return Retention(**vals)
