"""Policies: list (with the VMs using each and their next runs), create and edit through ``Policy.from_dict``.

The form is turned into the same mapping the CLI's YAML gives, so validation is the CLI's own; a ``PolicyError``
names its field (``schedule.time``), and the page shows its message beside that field.
"""

from __future__ import annotations

import re

from ...jobs.store import iso
from ...policy.model import Policy, PolicyError
from ...policy.schedule import upcoming
from ...service.daemon import Service
from .html import Viewer, esc, field, form, table

FREQ = ("daily", "weekly", "hourly")
RETENTION = ("last", "daily", "weekly", "monthly", "yearly")
_NUM = re.compile(r"^-?\d{1,9}$")


def _num(v: str) -> object:
    """A whole number where the user typed one, else the text itself (validation then names the field)."""
    v = v.strip()
    return int(v) if _NUM.match(v) else v


def to_dict(f: dict[str, str]) -> dict[str, object]:
    freq = f.get("schedule.frequency", "").strip()
    sched: dict[str, object] = {"frequency": freq}
    if freq in ("daily", "weekly"):
        sched["time"] = f.get("schedule.time", "").strip()
    if freq == "weekly":
        sched["days"] = f.get("schedule.days", "")
    if freq == "hourly":
        sched["every"] = _num(f.get("schedule.every", ""))
        if f.get("schedule.window_start", "").strip():
            sched["window_start"] = f["schedule.window_start"].strip()
        if f.get("schedule.window_hours", "").strip():
            sched["window_hours"] = _num(f["schedule.window_hours"])
    ret = {k: _num(f.get(f"retention.{k}", "")) for k in RETENTION if f.get(f"retention.{k}", "").strip()}
    d: dict[str, object] = {"name": f.get("name", "").strip(), "timezone": f.get("timezone", "").strip() or "UTC",
                            "schedule": sched, "retention": ret}
    if f.get("consistency", "").strip():
        d["consistency"] = f["consistency"].strip()
    if f.get("rpo_grace_minutes", "").strip():
        d["rpo_grace_minutes"] = _num(f["rpo_grace_minutes"])
    return d


def values_of(p: Policy) -> dict[str, str]:
    s = p.schedule
    v = {"name": p.name, "timezone": p.timezone, "consistency": p.consistency or "",
         "schedule.frequency": s.frequency, "schedule.time": s.time or "", "schedule.days": ",".join(s.days),
         "schedule.every": str(s.every or ""), "schedule.window_start": s.window_start or "",
         "schedule.window_hours": str(s.window_hours or ""),
         "rpo_grace_minutes": "" if p.rpo_grace_minutes is None else str(p.rpo_grace_minutes)}
    for k in RETENTION:
        n = getattr(p.retention, k)
        v[f"retention.{k}"] = str(n) if n else ""
    return v


def validate(f: dict[str, str]) -> tuple[Policy | None, dict[str, str]]:
    try:
        return Policy.from_dict(to_dict(f)), {}
    except PolicyError as exc:
        fld = exc.field if exc.field in _FIELDS else ("schedule.frequency" if exc.field.startswith("schedule")
                                                      else "retention.last" if exc.field.startswith("retention")
                                                      else "name")
        return None, {fld: exc.problem}


_FIELDS = {"name", "timezone", "consistency", "schedule.frequency", "schedule.time", "schedule.days",
           "schedule.every", "schedule.window_start", "schedule.window_hours", "rpo_grace_minutes",
           *(f"retention.{k}" for k in RETENTION)}


def editor(viewer: Viewer, action: str, values: dict[str, str], errors: dict[str, str], *, new: bool) -> str:
    v = values
    inner = (field("name", "name", v.get("name", ""), errors) if new else
             f'<input type="hidden" name="name" value="{esc(v.get("name", ""))}">')
    inner += (field("timezone", "time zone", v.get("timezone", "UTC"), errors, hint="IANA name, e.g. Europe/Berlin")
              + field("consistency", "consistency", v.get("consistency", ""), errors, options=("", "crash", "app"))
              + "<fieldset><legend>schedule</legend>"
              + field("schedule.frequency", "frequency", v.get("schedule.frequency", "daily"), errors, options=FREQ)
              + field("schedule.time", "time (daily, weekly)", v.get("schedule.time", "02:00"), errors, hint="HH:MM")
              + field("schedule.days", "days (weekly)", v.get("schedule.days", ""), errors, hint="e.g. sun,wed")
              + field("schedule.every", "every N hours (hourly)", v.get("schedule.every", ""), errors)
              + field("schedule.window_start", "window start (hourly)", v.get("schedule.window_start", ""), errors)
              + field("schedule.window_hours", "window hours (hourly)", v.get("schedule.window_hours", ""), errors)
              + "</fieldset><fieldset><legend>retention</legend>"
              + "".join(field(f"retention.{k}", f"keep {k}", v.get(f"retention.{k}", "7" if k == "last" and new
                                                                     else ""), errors) for k in RETENTION)
              + "</fieldset>"
              + field("rpo_grace_minutes", "RPO grace (minutes)", v.get("rpo_grace_minutes", ""), errors)
              + '<button type="submit">Save policy</button>')
    return form(action, viewer, inner, cls="block")


def render(svc: Service, viewer: Viewer, values: dict[str, str] | None = None,
           errors: dict[str, str] | None = None, message: str = "") -> str:
    vms = svc.vaults.get().catalog.vms()
    rows = []
    now = svc.clock.now()
    for p in svc.policies.all():
        users = [v.name for v in vms if v.settings.get("policy") == p.name]
        nxt = upcoming(p, now, 1)
        rows.append([f'<a href="/ui/policies/{esc(p.name)}">{esc(p.name)}</a>', esc(p.schedule.frequency),
                     esc(p.retention.describe()), ", ".join(f'<a href="/ui/vms/{esc(u)}">{esc(u)}</a>' for u in users)
                     or "none", esc(iso(nxt[0]) if nxt else "")])
    msg = f'<p role="status" class="ok">{esc(message)}</p>' if message else ""
    new = (f"<h2>New policy</h2>{editor(viewer, '/ui/policies', values or {}, errors or {}, new=True)}"
           if viewer.operator else "")
    return msg + table(["policy", "frequency", "retention", "VMs", "next run"], rows, "policies") + new


def render_one(svc: Service, viewer: Viewer, name: str, values: dict[str, str] | None = None,
               errors: dict[str, str] | None = None, message: str = "") -> str:
    p = svc.policies.get(name)
    users = [v.name for v in svc.vaults.get().catalog.vms() if v.settings.get("policy") == name]
    runs = upcoming(p, svc.clock.now(), 5)
    msg = f'<p role="status" class="ok">{esc(message)}</p>' if message else ""
    edit = (f"<h2>Edit</h2>{editor(viewer, f'/ui/policies/{name}', values or values_of(p), errors or {}, new=False)}"
            if viewer.operator else f"<pre>{esc(p.to_dict())}</pre>")
    return (msg + f"<p>Used by: {', '.join(esc(u) for u in users) or 'no VM'}.</p>"
            f"<p>Next runs: {', '.join(esc(iso(t)) for t in runs) or 'none'}</p>" + edit)
